// rollouts.js — #/rollouts (newest first) and #/rollouts/<id>: its batches with progress, its
// machines, and pause / resume / abort behind a confirmation.
import { get, post } from './api.js';
import { h, append, clear, when, progressBar, setProgress, stateBadge } from './dom.js';
import { flash, confirmedWrite, writeButton } from './app.js';

const ACTIVE = new Set(['pending', 'running', 'paused', 'rolling_back']);
// The states each action is allowed in (the API answers 409 otherwise).
const ALLOWED = {
  pause: new Set(['pending', 'running']),
  resume: new Set(['paused']),
  abort: ACTIVE,
};

// The share of the rollout's machines that are finished with (counts.total is their number).
function done(r) {
  const c = r.counts || {};
  const ended = ['done', 'failed', 'skipped', 'rolled_back', 'rollback_failed'];
  return c.total ? ended.reduce((a, k) => a + (c[k] || 0), 0) / c.total : 0;
}

export function renderRollouts(view) {
  const root = h('div', { class: 'page' });
  view.append(root);
  root.append(h('h1', {}, 'Rollouts'));
  (async () => {
    let items;
    try {
      items = (await get('/api/v1/rollouts?limit=100')).items;
    } catch (e) {
      flash(e);
      return;
    }
    if (!items.length) {
      root.append(h('p', { class: 'empty' }, 'No rollouts yet (kiln rollout create, or POST /api/v1/rollouts).'));
      return;
    }
    root.append(h('table', { class: 'grid', id: 'rollouts' },
      h('thead', {}, h('tr', {}, ['#', 'State', 'Selector', 'Version', 'Progress', 'Created', 'By']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, items.map((r) => {
        const bar = progressBar('rollout-progress-' + r.id, 'Rollout ' + r.id + ' progress');
        setProgress(bar, done(r));
        return h('tr', {},
          h('td', {}, h('a', { href: '#/rollouts/' + r.id }, '#' + r.id)),
          h('td', {}, stateBadge(r.state)), h('td', { class: 'mono' }, r.selector),
          h('td', {}, r.image + ' ' + r.version), h('td', {}, bar),
          h('td', {}, when(r.created_at)), h('td', {}, r.requested_by));
      }))));
  })();
}

export function renderRollout(view, id) {
  const root = h('div', { class: 'page' });
  view.append(root);
  let timer = null;
  let stopped = false;
  const load = async () => {
    let r;
    try {
      r = await get('/api/v1/rollouts/' + id);
    } catch (e) {
      flash(e);
      return;
    }
    if (stopped) return;
    const act = (name, label, text) => writeButton(label + '…', async () => {
      const res = await confirmedWrite(label + ' rollout #' + r.id + '?', text, label,
                                       () => post('/api/v1/rollouts/' + r.id + '/' + name), label + ': done.');
      if (res) load();
    }, { id: 'rollout-' + name, disabled: !ALLOWED[name].has(r.state) });
    const bar = progressBar('rollout-progress', 'Rollout progress');
    setProgress(bar, done(r));
    append(clear(root),
      h('p', { class: 'crumbs' }, h('a', { href: '#/rollouts' }, 'Rollouts'), ' / #' + r.id),
      h('h1', {}, 'Rollout #' + r.id + ' ', stateBadge(r.state)),
      r.reason ? h('p', { class: ['failed', 'aborted', 'paused', 'rolled_back'].includes(r.state) ? 'error' : 'help' },
                   r.reason) : null,
      h('section', { class: 'card' },
        h('dl', {},
          h('dt', {}, 'Version'), h('dd', {}, r.image + ' ' + r.version),
          h('dt', {}, 'Selector'), h('dd', { class: 'mono' }, r.selector),
          h('dt', {}, 'Batches'), h('dd', {}, r.batches.length + ' of ' + r.batch_size + ' machines' +
                                              (r.canary ? ', canary of ' + r.canary : '') +
                                              (r.current_batch !== null ? '; now batch ' + r.current_batch : '')),
          h('dt', {}, 'On failure'), h('dd', {}, r.on_failure + ' (after ' + r.max_failures + ' failures; ' + r.failures + ' so far)'),
          h('dt', {}, 'Gate'), h('dd', {}, r.gate),
          h('dt', {}, 'Requested by'), h('dd', {}, r.requested_by + ', ' + when(r.created_at))),
        bar,
        h('div', { class: 'buttons' },
          act('pause', 'Pause', 'No new batch starts until it is resumed; deployments already running go on.'),
          act('resume', 'Resume', 'The rollout goes on (acknowledging the failures so far).'),
          act('abort', 'Abort', 'The rollout stops for good; machines already deployed stay as they are.'))),
      h('section', { class: 'card' }, h('h2', {}, 'Batches'),
        h('table', { class: 'grid', id: 'batches' },
          h('thead', {}, h('tr', {}, ['Batch', 'Size', 'Pending', 'Deploying', 'Done', 'Failed', 'Skipped', 'Progress', 'Started', 'Finished']
            .map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, r.batches.map((b) => {
            const bb = progressBar('batch-' + b.index, 'Batch ' + b.index + ' progress');
            setProgress(bb, b.size ? (b.done + b.failed + b.skipped) / b.size : 0);
            return h('tr', {}, h('td', {}, String(b.index) + (b.canary ? ' (canary)' : '')), h('td', {}, String(b.size)),
              h('td', {}, String(b.pending)), h('td', {}, String(b.deploying)), h('td', {}, String(b.done)),
              h('td', {}, String(b.failed)), h('td', {}, String(b.skipped)), h('td', {}, bb),
              h('td', {}, when(b.started_at)), h('td', {}, when(b.finished_at)));
          })))),
      h('section', { class: 'card' }, h('h2', {}, 'Machines'),
        h('table', { class: 'grid' },
          h('thead', {}, h('tr', {}, ['Machine', 'Batch', 'State', 'Previous', 'Reason']
            .map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, (r.machines || []).map((m) => h('tr', {},
            h('td', {}, h('a', { href: '#/machines/' + m.machine_id }, m.name || '#' + m.machine_id)),
            h('td', {}, m.batch === null ? '—' : String(m.batch)), h('td', {}, stateBadge(m.state)),
            h('td', {}, m.previous ? m.previous.image + ' ' + m.previous.version : '—'),
            h('td', {}, m.reason || '')))))));
    if (ACTIVE.has(r.state)) timer = setTimeout(load, 5000);  // rollouts move by batches
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
