// api.js — the REST API v1 from the browser: the operator's token (sessionStorage, sent as
// "Authorization: Bearer ..."), JSON in and out, and the API's error bodies as ApiError.

const KEY = 'kiln.token';

export const session = {
  token: sessionStorage.getItem(KEY),
  name: null,
  scope: null,  // 'admin' | 'read'
  get admin() { return this.scope === 'admin'; },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  // "HTTP 403 forbidden: token 'viewer' has scope 'read'; this call needs 'admin'"
  describe() {
    return 'HTTP ' + this.status + (this.code ? ' ' + this.code : '') + ': ' + this.message;
  }
}

export async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = 'Bearer ' + session.token;
  const init = { method, headers, signal, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'kilnd did not answer (' + e.message + ')');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = json && json.error ? json.error : {};
    throw new ApiError(res.status, err.code || '', err.message || res.statusText || 'request failed');
  }
  return json;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const put = (path, body) => api('PUT', path, body);

// Checks `token` with GET /api/v1/whoami and keeps it for this browser session.
export async function signIn(token) {
  session.token = token;
  try {
    const who = await get('/api/v1/whoami');
    session.name = who.name;
    session.scope = who.scope;
    if (token) sessionStorage.setItem(KEY, token);
    return who;
  } catch (e) {
    signOut();
    throw e;
  }
}

export function signOut() {
  session.token = null;
  session.name = null;
  session.scope = null;
  sessionStorage.removeItem(KEY);
}

// Every machine (the API pages by id); `selector` is the API's label selector.
export async function allMachines(selector = '') {
  const out = [];
  let after = 0;
  for (let page = 0; page < 100; page++) {  // bounded: 100 pages of 1000
    const q = new URLSearchParams({ limit: '1000', after: String(after) });
    if (selector) q.set('selector', selector);
    const p = await get('/api/v1/machines?' + q);
    out.push(...p.items);
    if (p.next_after === null || p.next_after === undefined) break;
    after = p.next_after;
  }
  return out;
}

export const enc = encodeURIComponent;
