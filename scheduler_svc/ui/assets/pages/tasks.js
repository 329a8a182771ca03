// Tasks: newest first, a page at a time, kept fresh while it is open; filters and search by id
// live in the address so every view can be linked.

import { get } from '../api.js';
import {
  FINISHED, TASK_STATUSES, button, card, commandText, empty, errorBox, keyedRows, pageHeader,
  pager, setLiveState, statusBadge, taskLink, workerLink,
} from '../components.js';
import { durationText, elapsed, h, replace, secondsBetween, timeAgo } from '../dom.js';
import { followEvents } from '../events.js';
import { repeat } from '../live.js';
import { href, navigate } from '../router.js';
import { openSubmitDialog } from './submit.js';

const PAGE_SIZE = 50;
// Changes arrive on the event stream; the list is re-read at most this often however many
// arrive (100 a second cost the same two reads), and on a slow timer should the stream fail.
const EVENT_REFRESH_MS = 500;
const FALLBACK_REFRESH_MS = 10000;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/** GET /tasks parameters for a view of the list. */
function listQuery({ status, cursor, ids }) {
  if (ids.length) return { id: ids };
  return { status, limit: PAGE_SIZE, before: cursor };
}

function endedAt(task) {
  return task.completed_at ?? task.cancelled_at ?? task.failed_at;
}

function durationCell(task) {
  if (!task.started_at) return h('span', { class: 'muted' }, '–');
  const ended = endedAt(task);
  if (!ended) return elapsed(task.started_at);
  return durationText(secondsBetween(task.started_at, ended));
}

function rowCells(task) {
  return [
    h('td', {}, statusBadge(task.status)),
    h('td', {}, taskLink(task.task_id)),
    h('td', { class: 'cell-command' }, commandText(task.command)),
    h('td', {}, workerLink(task.worker_id)),
    h('td', { class: 'num' }, task.attempt),
    h('td', {}, timeAgo(task.scheduled_at)),
    h('td', {}, timeAgo(endedAt(task))),
    h('td', { class: 'num' }, durationCell(task)),
    h('td', { class: 'num' }, task.exit_code ?? h('span', { class: 'muted' }, '–')),
  ];
}

function statusTabs(active) {
  const tab = (status, label) => h('a', {
    class: 'tab', href: href('tasks', status ? { status } : undefined),
    'aria-current': (active || '') === status ? 'page' : null,
  }, label);
  return h('nav', { class: 'tabs', 'aria-label': 'Filter by status' },
    tab('', 'All'), TASK_STATUSES.map((s) => tab(s, s)));
}

function searchForm(ids, onError) {
  const input = h('input', {
    type: 'search', name: 'q', 'data-search': true, 'aria-label': 'Find tasks by id',
    placeholder: 'Find by task id…  ( / )', value: ids.join(' '), autocomplete: 'off',
    spellcheck: 'false', class: 'search',
  });
  const form = h('form', { class: 'search-form', role: 'search' }, input);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const found = [...new Set(input.value.match(UUID) ?? [])].map((id) => id.toLowerCase());
    if (!input.value.trim()) navigate(href('tasks'));
    else if (!found.length) onError('Enter a full task id, e.g. 0334aad4-c2c2-4457-b4f9-badcd90d02e6.');
    else if (found.length === 1) navigate(href(`tasks/${found[0]}`));
    else navigate(`${href('tasks')}?${found.map((id) => `id=${id}`).join('&')}`);
  });
  return form;
}

export async function tasksPage({ main, query, signal, canWrite }) {
  document.title = 'Tasks · skiplock';
  const view = {
    status: query.get('status') ?? '',
    cursor: query.get('cursor') ?? '',
    ids: query.getAll('id'),
  };
  const firstPage = !view.cursor && !view.ids.length;
  const notice = h('div', { class: 'notice-slot' });
  const tbody = h('tbody');
  const rows = keyedRows(tbody, (task) => task.task_id, rowCells);
  const footer = h('div', { class: 'table-footer' });
  const table = h('table', { class: 'table tasks-table' },
    h('thead', {}, h('tr', {},
      ['Status', 'Task', 'Command', 'Worker', 'Attempt', 'Scheduled', 'Ended', 'Duration', 'Exit']
        .map((label) => h('th', { scope: 'col' }, label)))),
    tbody);

  let live = null;
  const liveButton = button('Pause', () => {
    if (live.paused) live.resume();
    else live.pause();
    liveButton.textContent = live.paused ? 'Resume' : 'Pause';
    liveButton.setAttribute('aria-pressed', String(live.paused));
  }, { kind: 'btn-small', title: 'Pause or resume live updates', 'aria-pressed': 'false' });

  const newTask = canWrite
    ? button('New task', () => openSubmitDialog({ onCreated: () => live?.now() }), { kind: 'btn-primary', 'data-action': 'new-task' })
    : null;
  main.append(
    pageHeader('Tasks', { subtitle: view.ids.length ? `${view.ids.length} tasks by id` : 'Newest first', actions: [newTask] }),
    h('div', { class: 'toolbar' },
      statusTabs(view.status),
      searchForm(view.ids, (message) => replace(notice, errorBox(new Error(message)))),
      liveButton),
    notice,
    card(null, [h('div', { class: 'table-scroll' }, table), footer], { className: 'card-flush' }));

  async function loadPage() {
    const page = await get('tasks', { query: listQuery(view), signal });
    rows.show(page.tasks, { markNew: rows.size > 0 });
    replace(notice);
    const next = page.next_cursor
      ? href('tasks', { ...(view.status && { status: view.status }), cursor: page.next_cursor }) : null;
    const first = view.cursor ? href('tasks', view.status ? { status: view.status } : undefined) : null;
    replace(footer,
      rows.size ? null : empty(view.status ? `No ${view.status} tasks.` : 'No tasks yet.'),
      pager({ first, next }));
  }

  async function refreshUnfinished() {
    const ids = rows.items().filter((t) => !FINISHED.has(t.status)).map((t) => t.task_id);
    if (!ids.length) return;
    const page = await get('tasks', { query: { id: ids }, signal });
    rows.update(page.tasks);
  }

  await loadPage().catch((error) => {
    if (error.name !== 'AbortError') replace(notice, errorBox(error));
  });
  // The first page follows new tasks; older pages and id lists follow their rows' progress.
  let streaming = false;
  live = repeat(firstPage ? loadPage : refreshUnfinished, FALLBACK_REFRESH_MS, signal, {
    label: () => (streaming ? 'live' : `refreshing every ${FALLBACK_REFRESH_MS / 1000} s`),
  });
  let lastRead = 0;
  let pending = null;
  const refreshSoon = () => {
    if (live.paused || pending) return;
    pending = setTimeout(() => {
      pending = null;
      lastRead = Date.now();
      live.now();
    }, Math.max(0, lastRead + EVENT_REFRESH_MS - Date.now()));
  };
  const shown = () => new Set(rows.items().map((t) => t.task_id));
  followEvents({ kind: ['task', 'attempt'] }, signal, {
    onEvents(batch) {
      // The first page shows new tasks: any change may matter. Other views only their rows.
      const mine = firstPage ? batch : batch.filter((e) => shown().has(e.task_id));
      if (mine.length) refreshSoon();
    },
    onState(state) {
      streaming = state === 'live';
      if (!live.paused) setLiveState(streaming ? 'live' : `event stream: ${state} — retrying`, streaming ? 'live' : 'error');
    },
  });
}
