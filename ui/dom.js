// dom.js — builds DOM nodes without HTML strings (nothing from the API is ever parsed as
// markup) and formats values for the tables.

// h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child, [more]) -> Element.
// Attributes: on* are listeners, `class`, boolean true sets an empty attribute, false/null skip.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

// Appends nodes and text (arrays flattened; null, undefined and false skipped), unlike the
// DOM's own append, which would print "null".
export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + UNITS[i];
}

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}

export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString();
}

export function version(ref) {
  return ref ? ref.image + ' ' + ref.version : '—';
}

export function labels(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return '—';
  return h('span', { class: 'labels' }, entries.map(([k, v]) => h('span', { class: 'label' }, k + '=' + v)));
}

export function stateBadge(state) {
  return h('span', { class: 'state state-' + state }, state);
}

// A progress bar an assistive technology reads: role=progressbar, aria-valuenow in percent.
export function progressBar(id, label) {
  const fill = h('div', { class: 'bar-fill' });
  const bar = h('div', { class: 'bar', id, role: 'progressbar', 'aria-label': label,
                         'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0 }, fill);
  return bar;
}

export function setProgress(bar, fraction) {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 1000) / 10));
  bar.setAttribute('aria-valuenow', String(pct));
  bar.setAttribute('aria-valuetext', pct + '%');
  bar.firstChild.style.width = pct + '%';  // CSSOM: allowed under style-src 'self'
}
