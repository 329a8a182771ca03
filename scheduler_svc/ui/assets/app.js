// The dashboard's shell: who is signed in, which page is shown, what runs on every page.

import { ApiError, get, isAbort, onUnauthorized, token } from './api.js';
import { errorBox, pageHeader, setLiveState } from './components.js';
import { h, refreshRelativeTimes, replace } from './dom.js';
import { current, href, navigate, route, start } from './router.js';
import { overviewPage } from './pages/overview.js';
import { schedulePage } from './pages/schedule.js';
import { scheduleFormPage } from './pages/schedule_form.js';
import { schedulesPage } from './pages/schedules.js';
import { taskPage } from './pages/task.js';
import { tasksPage } from './pages/tasks.js';
import { workerPage } from './pages/worker.js';
import { workersPage } from './pages/workers.js';

route('', overviewPage);
route('tasks', tasksPage);
route('tasks/:id', taskPage);
route('workers', workersPage);
route('workers/:id', workerPage);
route('schedules', schedulesPage);
route('schedules/new', scheduleFormPage);
route('schedules/:id', schedulePage);
route('schedules/:id/edit', scheduleFormPage);

/** What the API lets this browser do: role "read" hides every write action. */
const session = { role: 'write', auth: 'none' };
let pageAbort = null;
let firstRender = true;

async function whoami() {
  try {
    Object.assign(session, await get('auth/whoami'));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    Object.assign(session, { role: 'write', auth: 'none' }); // a scheduler without tokens
  }
  const badge = document.getElementById('role-badge');
  badge.hidden = session.role !== 'read';
  badge.textContent = 'read-only';
  badge.title = 'This token may look but not change anything';
  document.getElementById('token-button').hidden = session.auth !== 'token';
}

/** Ask for a token in a modal dialog; resolves once one was entered. */
function askToken(message) {
  return new Promise((resolve) => {
    const input = h('input', {
      id: 'token-input', name: 'token', type: 'password', autocomplete: 'off', required: true,
      spellcheck: 'false', placeholder: 'API token',
    });
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'token-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'token-title' }, 'API token'),
        h('p', {}, message),
        h('label', { for: 'token-input', class: 'sr-only' }, 'API token'),
        input,
        h('p', { class: 'hint' }, 'Kept in this tab until it is closed, and sent as a bearer header.'),
        h('div', { class: 'dialog-actions' },
          h('button', { class: 'btn btn-primary', type: 'submit', value: 'ok' }, 'Use token'))));
    dialog.addEventListener('cancel', (event) => event.preventDefault());
    dialog.addEventListener('close', () => {
      token.set(input.value.trim());
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

let asking = null;

/** Until the API accepts us: ask for a token as often as it is refused. */
async function signIn() {
  asking ??= (async () => {
    let message = 'This scheduler needs an API token.';
    for (;;) {
      try {
        await whoami();
        return;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 401) throw error;
      }
      if (token.get()) message = 'That token was refused. Enter another one.';
      token.clear();
      await askToken(message);
    }
  })().finally(() => { asking = null; });
  return asking;
}

function markSection(path) {
  const section = path === '' ? 'overview' : path.split('/')[0];
  for (const link of document.querySelectorAll('.mainnav a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function render(where) {
  pageAbort?.abort();
  pageAbort = new AbortController();
  const main = document.getElementById('main');
  main.replaceChildren();
  markSection(where.path);
  setLiveState('');
  if (!where.handler) {
    document.title = 'Not found · skiplock';
    main.append(pageHeader('Page not found'),
      h('p', {}, 'Nothing lives at this address. ', h('a', { href: href('') }, 'Go to the overview.')));
    return;
  }
  try {
    await where.handler({
      main, params: where.params, query: where.query, signal: pageAbort.signal,
      canWrite: session.role === 'write',
    });
  } catch (error) {
    if (!isAbort(error)) replace(main, errorBox(error));
  }
  // After following a link, focus moves to the new page's heading, unless the reader has
  // already started using the page (e.g. typing in its search box while it loaded).
  if (!firstRender && !main.contains(document.activeElement)) {
    (main.querySelector('h1') ?? main).focus({ preventScroll: true });
  }
  firstRender = false;
}

const CHORDS = { o: '', t: 'tasks', w: 'workers', s: 'schedules' };
let chord = false;

function onKey(event) {
  const typing = event.target.closest('input, textarea, select, [contenteditable]');
  if (typing || event.metaKey || event.ctrlKey || event.altKey) return;
  if (event.key === '/') {
    const search = document.querySelector('[data-search]');
    if (search) {
      event.preventDefault();
      search.focus();
    }
  } else if (chord && event.key in CHORDS) {
    navigate(href(CHORDS[event.key]));
  }
  chord = event.key === 'g';
}

async function boot() {
  onUnauthorized(() => {
    signIn().then(() => render(current()), () => {});
  });
  document.getElementById('token-button').addEventListener('click', () => {
    token.clear();
    signIn().then(() => render(current()));
  });
  document.addEventListener('keydown', onKey);
  setInterval(refreshRelativeTimes, 1000);
  try {
    await signIn();
  } catch (error) {
    replace(document.getElementById('main'), errorBox(error));
    return;
  }
  start(render);
}

boot();
