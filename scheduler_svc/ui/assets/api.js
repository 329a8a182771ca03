// The scheduler's HTTP API, as the dashboard uses it: one place that adds the token, turns
// error bodies into ApiError, and knows where the API lives relative to the page.

const TOKEN_KEY = 'skiplock.token';

/** Where the dashboard is served ("/ui/", or "/prefix/ui/" behind a proxy), and the API root. */
export const UI_ROOT = new URL('.', document.baseURI).pathname;
export const API_ROOT = UI_ROOT.replace(/ui\/$/, '');

/** The API token, kept for this browser tab's session only. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

const unauthorizedListeners = new Set();

/** fn() is called whenever the API answers 401 (no token, or one it does not know). */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(describeDetail(status, detail));
    this.status = status;
    this.detail = detail;
  }

  /** {field: message} from a 422's [{loc: ["body", field], msg}], for inline form errors. */
  get fieldErrors() {
    const fields = {};
    if (Array.isArray(this.detail)) {
      for (const item of this.detail) {
        const loc = Array.isArray(item.loc) ? item.loc : [];
        const field = loc[0] === 'body' ? loc[1] : loc[loc.length - 1];
        if (typeof field === 'string' && !(field in fields)) fields[field] = item.msg;
      }
    }
    return fields;
  }
}

function describeDetail(status, detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      const where = (item.loc || []).filter((part) => part !== 'body').join('.');
      return where ? `${where}: ${item.msg}` : String(item.msg);
    }).join('; ');
  }
  return `the scheduler answered ${status}`;
}

/** A query string from {name: value | [values]}, leaving out empty values. */
export function queryString(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const item of [value].flat()) {
      if (item !== null && item !== undefined && item !== '') search.append(name, String(item));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

function headersFor(extra = {}, hasBody = false) {
  const headers = { Accept: 'application/json', ...extra };
  const current = token.get();
  if (current) headers.Authorization = `Bearer ${current}`;
  if (hasBody) headers['Content-Type'] = 'application/json';
  return headers;
}

/** fetch() against the API with the token; a non-2xx answer throws ApiError. */
export async function send(method, path, { query, body, signal, headers } = {}) {
  const response = await fetch(API_ROOT + path.replace(/^\//, '') + queryString(query), {
    method,
    headers: headersFor(headers, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: 'no-store',
  });
  if (!response.ok) {
    const detail = await response.json().then((b) => b.detail, () => undefined);
    if (response.status === 401) unauthorizedListeners.forEach((fn) => fn());
    throw new ApiError(response.status, detail);
  }
  return response;
}

async function json(method, path, options) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

export const get = (path, options) => json('GET', path, options);
export const post = (path, body, options = {}) => json('POST', path, { ...options, body });
export const patch = (path, body, options = {}) => json('PATCH', path, { ...options, body });
export const del = (path, options) => json('DELETE', path, options);

/** True for the error an aborted fetch throws (the page was left): nothing to show. */
export function isAbort(error) {
  return error?.name === 'AbortError';
}
