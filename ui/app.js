// app.js — the kiln dashboard: sign-in, hash routing (#/machines, #/machines/<id>, #/images,
// #/rollouts, #/rollouts/<id>), the flash of API errors and the confirmation dialog.
// Each page is `render(view, params) -> cleanup?`; the cleanup stops its long-polls.
import { session, signIn, signOut, ApiError } from './api.js';
import { h, clear } from './dom.js';
import { renderFleet, resetFleetFilters } from './fleet.js';
import { renderMachine } from './machine.js';
import { renderImages } from './images.js';
import { renderRollouts, renderRollout } from './rollouts.js';

const view = document.getElementById('view');
const flashEl = document.getElementById('flash');
let cleanup = null;

// Shows an error (an ApiError names the status, code and the API's field-named message).
export function flash(err, kind = 'error') {
  if (!err) {
    flashEl.hidden = true;
    clear(flashEl);
    return;
  }
  const text = err instanceof ApiError ? err.describe() : String(err.message || err);
  clear(flashEl).append(text);
  flashEl.className = 'flash flash-' + kind;
  flashEl.hidden = false;
  if (err instanceof ApiError && err.status === 401) {
    signOut();
    route();
  }
}

// Asks before a write: resolves true when the operator presses the confirm button.
export function confirmAction(title, body, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  clear(document.getElementById('confirm-body')).append(body instanceof Node ? body : h('p', {}, body));
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  ok.textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (v) => {
      ok.removeEventListener('click', onOk);
      cancel.removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      if (opener && opener.focus) opener.focus();
      resolve(v);
    };
    const onOk = () => done(true);
    const onCancel = (e) => {
      if (e) e.preventDefault();
      done(false);
    };
    ok.addEventListener('click', onOk);
    cancel.addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);  // Escape
    dlg.showModal();
    cancel.focus();
  });
}

// Runs a confirmed write; shows its result or the API's error. Returns the answer or null.
export async function confirmedWrite(title, body, okLabel, call, success) {
  if (!(await confirmAction(title, body, okLabel))) return null;
  try {
    const r = await call();
    flash(success ? { message: success } : null, 'ok');
    return r ?? {};
  } catch (e) {
    flash(e);
    return null;
  }
}

// A write control: disabled (with the reason) for a read token; the API refuses anyway.
export function writeButton(label, onclick, attrs = {}) {
  const b = h('button', { type: 'button', 'data-write': '', ...attrs }, label);
  if (session.admin) b.addEventListener('click', onclick);
  else {
    b.disabled = true;
    b.title = 'needs an admin token';
  }
  return b;
}

function renderSignIn(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true,
                             'aria-describedby': 'token-help' });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' }, message || '');
  const submit = async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      await signIn(input.value.trim());
      authChecked = true;
      if (location.hash === '#/machines') route();
      else location.hash = '#/machines';  // hashchange routes
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.describe() : String(err);
    }
  };
  // Not a <form>: form-action 'none' forbids submissions; Enter in the field signs in.
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') submit(e); });
  view.append(h('section', { class: 'signin' },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'help' },
      'A token from "kilnd token create" or POST /api/v1/tokens. It is kept for this browser tab only. ',
      'A read token gives a read-only view.'),
    h('button', { type: 'button', id: 'sign-in', class: 'primary', onclick: submit }, 'Sign in'),
    error));
  input.focus();
}

function header() {
  const signedIn = session.scope !== null;
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('whoami').hidden = !signedIn;
  document.getElementById('who-name').textContent = session.name || '';
  const scope = document.getElementById('who-scope');
  scope.textContent = session.admin ? 'admin' : 'read-only';
  scope.className = 'badge ' + (session.admin ? 'badge-admin' : 'badge-read');
  const section = (location.hash.split('/')[1] || 'machines').split('?')[0];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

const ROUTES = [
  [/^#\/machines\/([^/]+)$/, (m) => renderMachine(view, decodeURIComponent(m[1]))],
  [/^#\/machines\/?$/, () => renderFleet(view)],
  [/^#\/images\/?$/, () => renderImages(view)],
  [/^#\/rollouts\/(\d+)$/, (m) => renderRollout(view, m[1])],
  [/^#\/rollouts\/?$/, () => renderRollouts(view)],
];

let authChecked = false;  // a token kept from earlier in this tab is checked once
let generation = 0;       // a newer route() wins over one still waiting

export async function route() {
  const gen = ++generation;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (session.token && !authChecked) {
    authChecked = true;
    try {
      await signIn(session.token);
    } catch (e) {
      flash(e);
    }
    if (gen !== generation) return;
  }
  clear(view);
  header();
  if (session.scope === null) {
    renderSignIn();
    return;
  }
  const hash = location.hash || '#/machines';
  for (const [re, fn] of ROUTES) {
    const m = hash.match(re);
    if (m) {
      cleanup = fn(m) || null;
      return;
    }
  }
  view.append(h('h1', {}, 'Not found'), h('p', {}, 'No page at ' + hash + '. '),
              h('a', { href: '#/machines' }, 'Machines'));
}

document.getElementById('sign-out').addEventListener('click', () => {
  signOut();
  resetFleetFilters();
  authChecked = true;
  flash(null);
  location.hash = '#/machines';
  route();
});
window.addEventListener('hashchange', () => {
  flash(null);
  route();
});
route();
