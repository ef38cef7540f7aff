// The admin API client. The session lives in the HttpOnly `gb_session` cookie; the page
// never sees or stores the token. Every call sends `X-Requested-With` (the CSRF rule for
// cookie sessions). Any 401 outside login hands control to `onUnauthorized`.

import { t } from './i18n.js';

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
  /** The endpoint does not exist in this daemon (yet). */
  get unavailable() {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
  get unauthorized() {
    return this.status === 401;
  }
}

let unauthorized = () => {};

export function onUnauthorized(fn) {
  unauthorized = fn;
}

function headers(extra) {
  return Object.assign({ 'X-Requested-With': 'gemini-balance', Accept: 'application/json' }, extra);
}

/**
 * api('/api/keys') → parsed JSON (or text for text answers).
 * Options: method, json (object body), text (text/plain body), raw (return the Response).
 */
export async function api(path, opts = {}) {
  const { method = 'GET', json, text, raw, signal } = opts;
  const init = { method, credentials: 'same-origin', headers: headers(), signal };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (text !== undefined) {
    init.headers['Content-Type'] = 'text/plain; charset=utf-8';
    init.body = text;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, t('err.network'));
  }
  if (!res.ok) {
    let message = '';
    try {
      const body = await res.json();
      message = body && typeof body.error === 'string' ? body.error : '';
    } catch {
      message = '';
    }
    const err = new ApiError(res.status, message || `${res.status} ${res.statusText}`,
      Number(res.headers.get('Retry-After')) || null);
    if (res.status === 401 && path !== '/api/login') unauthorized();
    throw err;
  }
  if (raw) return res;
  const type = res.headers.get('Content-Type') || '';
  if (res.status === 204) return null;
  return type.includes('json') ? res.json() : res.text();
}

/** Query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
