// One task: its command, settings, every attempt on a timeline, and cancel / retry.

import { get, post } from '../api.js';
import {
  FINISHED, button, card, confirmDialog, copyButton, empty, facts, firstLoad, pageHeader,
  statusBadge, taskLink, toast, workerLink,
} from '../components.js';
import {
  durationText, elapsed, h, replace, secondsBetween, timeAgo, utcText, visibleText,
} from '../dom.js';
import { repeat } from '../live.js';
import { outputPanel } from '../output.js';
import { href } from '../router.js';

const REFRESH_RUNNING_MS = 1000;
const REFRESH_FINISHED_MS = 5000;

function endedAt(task) {
  return task.completed_at ?? task.cancelled_at ?? task.failed_at;
}

function runTime(startedAt, endedAtIso) {
  if (!startedAt) return null;
  return endedAtIso ? durationText(secondsBetween(startedAt, endedAtIso)) : elapsed(startedAt);
}

function settings(task) {
  return facts([
    ['Status', statusBadge(task.status)],
    ['Created', timeAgo(task.created_at)],
    ['Scheduled', timeAgo(task.scheduled_at)],
    ['Started', timeAgo(task.started_at)],
    ['Ended', timeAgo(endedAt(task))],
    ['Run time', runTime(task.started_at, endedAt(task))],
    ['Worker', workerLink(task.worker_id)],
    ['Exit code', task.exit_code],
    ['Last reason', task.last_reason],
    ['Attempts', String(task.attempt)],
    ['Retries left', `${task.retries_left} of ${task.max_retries}`],
    ['Retry backoff', durationText(task.retry_backoff_seconds)],
    ['Timeout', task.timeout_seconds ? durationText(task.timeout_seconds) : 'none'],
    ['Lost-worker retries left', task.lost_retries === undefined ? null : `${task.lost_retries_left} of ${task.lost_retries}`],
    ['Priority', task.priority === undefined ? null : String(task.priority)],
    ['Queue', task.queue],
    task.after && task.after.length ? ['After', h('span', {}, ...task.after.flatMap((t, i) => (i ? [' ', taskLink(t)] : [taskLink(t)])))] : null,
    task.labels && Object.keys(task.labels).length ? ['Needs labels', pairsText(task.labels)] : null,
    task.cwd ? ['Working directory', h('span', { class: 'mono' }, visibleText(task.cwd, { oneLine: true }))] : null,
    task.env && Object.keys(task.env).length ? ['Environment', pairsText(task.env)] : null,
    task.success_exit_codes && task.success_exit_codes.join() !== '0' ? ['Success exit codes', task.success_exit_codes.join(', ')] : null,
  ]);
}

/** {k: v} as one line of k=v, control characters visible. */
function pairsText(pairs) {
  const text = Object.entries(pairs).map(([k, v]) => `${k}=${v}`).join(' ');
  return h('span', { class: 'mono small' }, visibleText(text, { oneLine: true }));
}

/** Each attempt as a bar on one time axis: waiting for its worker (light), then running. */
function timeline(task) {
  const attempts = task.attempts;
  if (!attempts.length) {
    return empty(task.status === 'cancelled' ? 'Cancelled before it was dispatched.'
      : task.last_reason === 'dependency_failed' ? 'Never ran: a task in its after failed or was cancelled.'
        : 'Not dispatched yet.');
  }
  const now = Date.now();
  const start = Date.parse(task.created_at);
  const end = Math.max(start + 1, ...attempts.map((a) => (a.ended_at ? Date.parse(a.ended_at) : now)));
  const pct = (iso) => ((Date.parse(iso ?? new Date(now).toISOString()) - start) / (end - start)) * 100;
  const bar = (className, from, to, title) => {
    const el = h('span', { class: `tl-bar ${className}`, title });
    el.style.left = `${pct(from)}%`;
    el.style.width = `${Math.max(pct(to) - pct(from), 0.4)}%`;
    return el;
  };
  return h('div', { class: 'timeline', role: 'img', 'aria-label': 'Attempts over time' },
    attempts.map((a) => {
      const label = `attempt ${a.attempt} on ${a.worker_id ?? 'no worker'}: ${a.status}`
        + (a.reason ? ` (${a.reason})` : '');
      return h('div', { class: 'tl-row' },
        h('span', { class: 'tl-label' }, `#${a.attempt}`),
        h('span', { class: 'tl-track' },
          bar('tl-wait', a.picked_at, a.started_at ?? a.ended_at, `${label}; handed over ${utcText(a.picked_at)} UTC`),
          a.started_at ? bar(`tl-run status-${a.status}`, a.started_at, a.ended_at, label) : null));
    }),
    h('div', { class: 'tl-axis' },
      h('span', {}, `${utcText(task.created_at)} UTC`),
      h('span', {}, durationText((end - start) / 1000))));
}

function attemptsTable(task) {
  if (!task.attempts.length) return null;
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table' },
    h('thead', {}, h('tr', {}, ['#', 'Status', 'Worker', 'Handed over', 'Run time', 'Reason', 'Exit', 'Output file']
      .map((label) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, [...task.attempts].reverse().map((a) => h('tr', {},
      h('td', { class: 'num' }, a.attempt),
      h('td', {}, statusBadge(a.status)),
      h('td', {}, workerLink(a.worker_id)),
      h('td', {}, timeAgo(a.picked_at)),
      h('td', { class: 'num' }, runTime(a.started_at, a.ended_at) ?? '–'),
      h('td', {}, a.reason ?? '', a.detail ? h('div', { class: 'muted small' }, visibleText(a.detail)) : null,
        a.cancel_requested_at && !FINISHED.has(a.status) ? h('div', { class: 'muted small' }, 'cancel requested') : null),
      h('td', { class: 'num' }, a.exit_code ?? '–'),
      h('td', { class: 'mono small break' }, a.output_path ?? '–'))))));
}

export async function taskPage({ main, params, signal, canWrite }) {
  const id = params.id;
  document.title = `Task ${id.slice(0, 8)} · skiplock`;
  const actions = h('div', { class: 'page-actions' });
  const header = pageHeader(`Task ${id.slice(0, 8)}`, {
    back: { href: href('tasks'), label: 'Tasks' },
    subtitle: h('span', { class: 'mono' }, id, ' ', copyButton(id, 'Copy id')),
  });
  header.querySelector('.page-actions').replaceWith(actions);
  const commandBox = h('pre', { class: 'command-block' });
  const facts = h('div');
  const attempts = h('div');
  const output = outputPanel(id, signal);
  main.append(header,
    card('Command', commandBox),
    card('Details', facts),
    card('Attempts', attempts),
    card('Output', output.element, { id: 'output' }));

  let task = null;
  let refresher = null;

  async function act(verb) {
    try {
      task = await post(`tasks/${id}/${verb}`, undefined, { signal });
      toast(verb === 'cancel' ? 'Task cancelled.' : 'Task queued again.', { kind: 'success' });
      show();
      refresher?.now();
    } catch (error) {
      toast(error.message, { kind: 'error' });
    }
  }

  function show() {
    commandBox.replaceChildren(visibleText(task.command));
    replace(facts, task.waiting_for && (task.status === 'queued' || task.status === 'waiting')
      ? h('p', { class: 'notice-waiting', role: 'status' }, `Waiting: ${task.waiting_for}`) : null,
    settings(task));
    replace(attempts, timeline(task), attemptsTable(task));
    output.update(task);
    replace(actions, canWrite && !FINISHED.has(task.status) ? button('Cancel task', async () => {
      if (await confirmDialog('Cancel this task?', 'A running command is stopped on its worker.', { confirmLabel: 'Cancel task', danger: true })) act('cancel');
    }, { kind: 'btn-danger', 'data-action': 'cancel' }) : null,
    canWrite && task.status === 'failed' ? button('Retry', () => act('retry'), { kind: 'btn-primary', 'data-action': 'retry' }) : null);
  }

  async function load() {
    task = await get(`tasks/${id}`, { signal });
    show();
  }

  if (!(await firstLoad(load, main, header))) return;
  const interval = () => (FINISHED.has(task.status) ? REFRESH_FINISHED_MS : REFRESH_RUNNING_MS);
  refresher = repeat(load, interval, signal, {
    label: () => `refreshing every ${interval() / 1000} s`,
  });
}
