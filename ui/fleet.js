// fleet.js — #/machines: machines by state, the label filter (the API's selector) and a
// search by MAC or name (in the page), the machine table.
import { allMachines } from './api.js';
import { h, clear, labels, stateBadge, version } from './dom.js';
import { flash } from './app.js';

const STATES = ['discovered', 'ready', 'deploying', 'deployed', 'failed'];
const filters = { selector: '', search: '' };  // kept while the tab lives

// Forgets the filters (at sign-out: the next operator starts from the whole fleet).
export function resetFleetFilters() {
  filters.selector = '';
  filters.search = '';
}

function matches(m, q) {
  if (!q) return true;
  q = q.toLowerCase();
  const bare = q.replace(/[^0-9a-f]/g, '');
  return (m.name || '').toLowerCase().includes(q) ||
         m.macs.some((mac) => mac.includes(q) || (bare.length >= 4 && mac.replace(/:/g, '').includes(bare)));
}

export function renderFleet(view) {
  const root = h('div', { class: 'page' });
  view.append(root);
  let machines = [];
  const counts = h('ul', { class: 'counts', id: 'state-counts', 'aria-label': 'Machines by state' });
  const tbody = h('tbody');
  const summary = h('p', { id: 'fleet-summary', class: 'help', 'aria-live': 'polite' });
  const selector = h('input', { id: 'selector', type: 'text', value: filters.selector,
                                placeholder: 'rack=r1,role!=db', spellcheck: 'false' });
  const search = h('input', { id: 'search', type: 'search', value: filters.search,
                              placeholder: 'name or MAC', spellcheck: 'false' });

  const draw = () => {
    clear(counts);
    const by = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const m of machines) by[m.state] = (by[m.state] || 0) + 1;
    for (const [s, n] of Object.entries(by)) {
      counts.append(h('li', { class: 'count state-' + s, 'data-state': s },
        h('span', { class: 'count-n' }, String(n)), h('span', { class: 'count-label' }, s)));
    }
    clear(tbody);
    const shown = machines.filter((m) => matches(m, filters.search));
    for (const m of shown) {
      tbody.append(h('tr', { 'data-machine-id': m.id },
        h('td', {}, h('a', { href: '#/machines/' + m.id }, m.name || '(unnamed #' + m.id + ')')),
        h('td', { class: 'mono' }, m.macs.join(' ')),
        h('td', {}, stateBadge(m.state)),
        h('td', {}, version(m.current_version)),
        h('td', {}, m.assignment ? m.assignment.image + ' ' + m.assignment.version : '—'),
        h('td', {}, labels(m.labels))));
    }
    if (!shown.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No machines match.')));
    summary.textContent = shown.length + ' of ' + machines.length + ' machines shown' +
                          (filters.selector ? ' (selector ' + filters.selector + ')' : '');
  };

  const load = async () => {
    try {
      machines = await allMachines(filters.selector);
      flash(null);
    } catch (e) {
      machines = [];
      flash(e);  // e.g. 422 for a bad selector, with the API's message
    }
    draw();
  };

  const apply = () => {
    filters.selector = selector.value.trim();
    load();
  };
  selector.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  search.addEventListener('input', () => {
    filters.search = search.value.trim();
    draw();
  });

  root.append(
    h('h1', {}, 'Machines'),
    counts,
    h('div', { class: 'filters', role: 'search' },
      h('div', { class: 'field' }, h('label', { for: 'selector' }, 'Labels'), selector,
        h('button', { type: 'button', id: 'apply-selector', onclick: apply }, 'Filter')),
      h('div', { class: 'field' }, h('label', { for: 'search' }, 'Search'), search)),
    summary,
    h('table', { class: 'grid', id: 'machines' },
      h('thead', {}, h('tr', {}, ['Name', 'MAC', 'State', 'Current version', 'Assigned', 'Labels']
        .map((t) => h('th', { scope: 'col' }, t)))),
      tbody));
  load();
}
