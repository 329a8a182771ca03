// Path routing under the dashboard's root: /ui/tasks/<id> is a real address the scheduler
// answers with index.html, so every task, worker and schedule has a link of its own.

import { UI_ROOT } from './api.js';

const routes = [];
let onChange = () => {};

/** route('tasks/:id', handler): handler({params, query}) renders that page. */
export function route(pattern, handler) {
  const names = [];
  const source = pattern.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return '([^/]+)';
  });
  routes.push({ regex: new RegExp(`^${source}/?$`), names, handler });
}

/** The address of a dashboard page, e.g. href('tasks/' + id) → "/ui/tasks/…". */
export function href(path = '', query) {
  const search = query ? new URLSearchParams(query).toString() : '';
  return UI_ROOT + path.replace(/^\//, '') + (search ? `?${search}` : '');
}

export function current() {
  const path = location.pathname.startsWith(UI_ROOT)
    ? location.pathname.slice(UI_ROOT.length) : '';
  const query = new URLSearchParams(location.search);
  for (const { regex, names, handler } of routes) {
    const match = regex.exec(path);
    if (match) {
      const params = {};
      names.forEach((name, i) => { params[name] = decodeURIComponent(match[i + 1]); });
      return { handler, params, query, path };
    }
  }
  return { handler: null, params: {}, query, path };
}

export function navigate(to, { replace = false } = {}) {
  const url = new URL(to, location.href);
  if (url.href === location.href && !replace) return;
  history[replace ? 'replaceState' : 'pushState']({}, '', url);
  onChange();
}

/** Rewrite the address's query (filters, cursors) without re-rendering the page. */
export function setQuery(params) {
  const url = new URL(location.href);
  url.search = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ''),
  ).toString();
  history.replaceState({}, '', url);
}

function isOwnLink(event) {
  if (event.defaultPrevented || event.button !== 0) return null;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return null;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return null;
  const url = new URL(link.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(UI_ROOT)) return null;
  if (url.pathname.startsWith(`${UI_ROOT}assets/`)) return null;
  const samePage = url.pathname === location.pathname && url.search === location.search;
  if (samePage && url.hash) return null; // in-page anchors, e.g. the skip link
  return url;
}

/** Follow dashboard links without reloading; render(route) on every change. */
export function start(render) {
  onChange = () => render(current());
  document.addEventListener('click', (event) => {
    const url = isOwnLink(event);
    if (!url) return;
    event.preventDefault();
    navigate(url.href);
  });
  window.addEventListener('popstate', onChange);
  onChange();
}
