// machine.js — #/machines/<id>: inventory, current and assigned version, the live progress of
// the active deployment (from the long-polled event stream: rate and ETA from the reported
// bytes over the events' times), the deployment history and the actions (assign, rollback,
// power), each behind a confirmation.
import { get, post, put, enc, session } from './api.js';
import { h, append, clear, bytes, duration, when, version, labels, stateBadge, progressBar, setProgress } from './dom.js';
import { flash, confirmedWrite, writeButton } from './app.js';

const WAIT_S = 25;  // one long-poll; the API caps it at api.max_wait_ms

// Rate (bytes/s) over the samples of the last minute, from the events' server times.
function rateOf(samples) {
  if (samples.length < 2) return null;
  const last = samples[samples.length - 1];
  let first = samples[0];
  for (const s of samples) if (last.t - s.t <= 60_000) { first = s; break; }
  const dt = (last.t - first.t) / 1000;
  if (dt <= 0 || last.b < first.b) return null;
  return (last.b - first.b) / dt;
}

function historyBytes(d) {
  return d.bytes_total > 0 ? bytes(d.bytes_done) + ' / ' + bytes(d.bytes_total) : bytes(d.bytes_done);
}

function inventoryView(inv) {
  const keys = Object.keys(inv || {});
  if (!keys.length) return h('p', { class: 'help' }, 'No inventory reported (the machine has not run discovery).');
  return h('dl', { class: 'inventory' }, keys.map((k) => {
    const v = inv[k];
    const shown = v !== null && typeof v === 'object' ? h('pre', {}, JSON.stringify(v, null, 2)) : String(v);
    return [h('dt', {}, k), h('dd', {}, shown)];
  }));
}

export function renderMachine(view, id) {
  const root = h('div', { class: 'page' });
  view.append(root);
  const ctl = new AbortController();
  let machine = null;
  let deployment = null;
  let samples = [];
  let images = [];
  const bar = progressBar('progress', 'Deployment progress');
  const progressText = h('p', { id: 'progress-text', 'aria-live': 'polite' });
  const progressSection = h('section', { id: 'live', class: 'card' });

  const drawProgress = () => {
    clear(progressSection).append(h('h2', {}, 'Active deployment'));
    if (!deployment) {
      progressSection.append(h('p', { class: 'help' }, 'No deployment in progress.'));
      return;
    }
    const d = deployment;
    const frac = d.bytes_total > 0 ? d.bytes_done / d.bytes_total : 0;
    setProgress(bar, frac);
    const rate = rateOf(samples);
    const eta = rate && d.bytes_total > 0 ? (d.bytes_total - d.bytes_done) / rate : NaN;
    progressText.textContent =
      '#' + d.id + ' ' + d.to.image + ' ' + d.to.version + ' · ' + d.status + (d.stage ? ' (' + d.stage + ')' : '') +
      ' · ' + bytes(d.bytes_done) + ' of ' + (d.bytes_total > 0 ? bytes(d.bytes_total) : 'unknown') +
      ' · ' + (rate ? bytes(rate) + '/s' : 'rate —') + ' · ETA ' + duration(eta);
    progressSection.append(bar, progressText);
  };

  const loadDeployment = async () => {
    deployment = machine.assignment ? await get('/api/v1/deployments/' + machine.assignment.deployment_id) : null;
  };

  // The machine's event cursor: the newest event about it (bounded walk of its pages). The
  // active deployment's past progress reports seed the rate, so a page opened mid-deployment
  // shows one at once.
  const cursor = async () => {
    let since = 0;
    for (let i = 0; i < 200; i++) {
      const p = await get('/api/v1/events?limit=1000&machine=' + enc(id) + '&since=' + since, { signal: ctl.signal });
      if (!p.events.length) break;
      for (const ev of p.events) {
        if (ev.type === 'deployment.progress' && deployment && ev.deployment_id === deployment.id &&
            typeof ev.data.bytes_done === 'number') {
          samples.push({ t: Date.parse(ev.time), b: ev.data.bytes_done });
          if (samples.length > 120) samples.shift();
        }
      }
      since = p.next;
    }
    drawProgress();
    return since;
  };

  const follow = async () => {
    let since;
    try {
      since = await cursor();
    } catch (e) {
      if (e.name !== 'AbortError') flash(e);
      return;
    }
    while (!ctl.signal.aborted) {
      let page;
      try {
        page = await get('/api/v1/events?machine=' + enc(id) + '&since=' + since + '&wait=' + WAIT_S,
                         { signal: ctl.signal });
      } catch (e) {
        if (e.name === 'AbortError') return;
        flash(e);
        await new Promise((r) => setTimeout(r, 5000));
        continue;
      }
      since = page.next;
      let reload = false;
      for (const ev of page.events) {
        if (ev.type === 'deployment.progress' && deployment && ev.deployment_id === deployment.id) {
          deployment.bytes_done = ev.data.bytes_done ?? deployment.bytes_done;
          deployment.bytes_total = ev.data.bytes_total ?? deployment.bytes_total;
          deployment.stage = ev.data.stage ?? deployment.stage;
          deployment.status = 'running';
          samples.push({ t: Date.parse(ev.time), b: deployment.bytes_done });
          if (samples.length > 120) samples.shift();
        } else {
          reload = true;  // created, succeeded, failed, superseded, labels, power, ...
        }
      }
      if (reload) await load(false);
      else {
        drawProgress();
        // The history row of the active deployment follows too (its status comes with the next
        // reload, at the result).
        const row = deployment && root.querySelector('tr[data-deployment="' + deployment.id + '"]');
        if (row) {
          row.querySelector('.h-stage').textContent = deployment.stage || '—';
          row.querySelector('.h-bytes').textContent = historyBytes(deployment);
        }
      }
    }
  };

  const assignForm = () => {
    const names = [...new Set(images.map((v) => v.name))];
    const imageSel = h('select', { id: 'assign-image' }, names.map((n) => h('option', { value: n }, n)));
    const versionSel = h('select', { id: 'assign-version' });
    const fillVersions = () => {
      append(clear(versionSel), images.filter((v) => v.name === imageSel.value)
        .map((v) => h('option', { value: v.version }, v.version)));
    };
    imageSel.addEventListener('change', fillVersions);
    fillVersions();
    const force = h('input', { id: 'assign-force', type: 'checkbox' });
    const reboot = h('input', { id: 'assign-reboot', type: 'checkbox', disabled: !machine.bmc });
    const assign = writeButton('Assign…', async () => {
      if (!imageSel.value || !versionSel.value) return flash({ message: 'Pick an image and a version.' });
      const body = { image: imageSel.value, version: versionSel.value };
      if (force.checked) body.force = true;
      if (reboot.checked) body.reboot = true;
      const r = await confirmedWrite('Assign ' + body.image + ' ' + body.version + '?',
        'Machine ' + (machine.name || machine.macs[0]) + ' will be imaged with ' + body.image + ' ' + body.version +
        (body.reboot ? ', power-cycled through its BMC now.' : ' at its next network boot.'),
        'Assign', () => put('/api/v1/machines/' + machine.id + '/assignment', body),
        'Assigned ' + body.image + ' ' + body.version + '.');
      if (r) load(false);
    }, { id: 'assign' });
    return h('div', { class: 'action' },
      h('h3', {}, 'Assign a version'),
      h('div', { class: 'field' }, h('label', { for: 'assign-image' }, 'Image'), imageSel),
      h('div', { class: 'field' }, h('label', { for: 'assign-version' }, 'Version'), versionSel),
      h('div', { class: 'check' }, force, h('label', { for: 'assign-force' }, 'Supersede an active deployment')),
      h('div', { class: 'check' }, reboot, h('label', { for: 'assign-reboot' }, 'Power-cycle now through the BMC')),
      names.length ? assign : h('p', { class: 'help' }, 'No images yet.'));
  };

  const actions = () => {
    const rollback = writeButton('Roll back…', async () => {
      const r = await confirmedWrite('Roll back ' + (machine.name || machine.macs[0]) + '?',
        'Reassigns the last version that booted on this machine.', 'Roll back',
        () => post('/api/v1/machines/' + machine.id + '/rollback'), 'Rollback assigned.');
      if (r) load(false);
    }, { id: 'rollback' });
    const power = machine.bmc
      ? h('div', { class: 'action' }, h('h3', {}, 'Power (' + machine.bmc.driver + ')'),
          h('div', { class: 'buttons' }, ['on', 'off', 'cycle', 'soft-off'].map((a) =>
            writeButton('Power ' + a + '…', async () => {
              await confirmedWrite('Power ' + a + ' ' + (machine.name || machine.macs[0]) + '?',
                'kilnd asks the BMC to power ' + a + ' the machine now.', 'Power ' + a,
                () => post('/api/v1/machines/' + machine.id + '/power', { action: a }), 'Power ' + a + ' done.');
            }, { id: 'power-' + a }))))
      : h('div', { class: 'action' }, h('h3', {}, 'Power'), h('p', { class: 'help' }, 'No BMC configured.'));
    return h('section', { class: 'card', id: 'actions' }, h('h2', {}, 'Actions'),
      session.admin ? null : h('p', { class: 'help' }, 'Read-only: this token cannot change machines.'),
      assignForm(), h('div', { class: 'action' }, h('h3', {}, 'Rollback'), rollback), power);
  };

  const draw = (history) => {
    clear(root);
    const m = machine;
    append(root,
      h('p', { class: 'crumbs' }, h('a', { href: '#/machines' }, 'Machines'), ' / ', m.name || '#' + m.id),
      h('h1', {}, m.name || 'Machine #' + m.id, ' ', stateBadge(m.state)),
      m.state_reason ? h('p', { class: 'error' }, m.state_reason) : null,
      h('div', { class: 'columns' },
        h('section', { class: 'card', id: 'summary' }, h('h2', {}, 'Machine'),
          h('dl', {},
            h('dt', {}, 'MACs'), h('dd', { class: 'mono' }, m.macs.join(' ')),
            h('dt', {}, 'IPv4'), h('dd', {}, m.ipv4 || '—'),
            h('dt', {}, 'UUID'), h('dd', { class: 'mono' }, m.uuid || '—'),
            h('dt', {}, 'Labels'), h('dd', {}, labels(m.labels)),
            h('dt', {}, 'Current version'), h('dd', { id: 'current-version' }, version(m.current_version)),
            h('dt', {}, 'Assigned version'),
            h('dd', { id: 'assigned-version' }, m.assignment ? m.assignment.image + ' ' + m.assignment.version : '—'),
            h('dt', {}, 'BMC'), h('dd', {}, m.bmc ? m.bmc.driver : '—'),
            h('dt', {}, 'Updated'), h('dd', {}, when(m.updated_at)))),
        progressSection),
      actions(),
      h('section', { class: 'card' }, h('h2', {}, 'Inventory'), inventoryView(m.inventory)),
      h('section', { class: 'card' }, h('h2', {}, 'History'),
        h('table', { class: 'grid', id: 'history' },
          h('thead', {}, h('tr', {}, ['#', 'Kind', 'From', 'To', 'Status', 'Stage', 'Bytes', 'Created', 'Took', 'By']
            .map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, history.length ? history.map((d) => h('tr', { 'data-deployment': d.id },
            h('td', {}, String(d.id)), h('td', {}, d.kind), h('td', {}, version(d.from)), h('td', {}, version(d.to)),
            h('td', {}, h('span', { class: 'status status-' + d.status }, d.status),
              d.status_reason ? h('div', { class: 'help' }, d.status_reason) : null),
            h('td', { class: 'h-stage' }, d.stage || '—'),
            h('td', { class: 'h-bytes' }, historyBytes(d)),
            h('td', {}, when(d.created_at)),
            h('td', {}, d.duration_ms !== null ? duration(d.duration_ms / 1000) : '—'),
            h('td', {}, d.requested_by)))
            : h('tr', {}, h('td', { colspan: 10, class: 'empty' }, 'Never deployed.'))))));
    drawProgress();
  };

  const load = async (first) => {
    try {
      const [m, hist, imgs] = await Promise.all([
        get('/api/v1/machines/' + enc(id)),
        get('/api/v1/machines/' + enc(id) + '/deployments'),
        get('/api/v1/images'),
      ]);
      if (ctl.signal.aborted) return;
      machine = m;
      images = imgs.items;
      const prev = deployment ? deployment.id : null;
      await loadDeployment();
      if (deployment && deployment.id !== prev) samples = [];
      draw(hist.items);
      if (first) follow();
    } catch (e) {
      if (e.name === 'AbortError') return;
      flash(e);
      if (first) root.append(h('p', {}, h('a', { href: '#/machines' }, 'Back to machines')));
    }
  };

  load(true);
  return () => ctl.abort();
}
