// Overview: what needs attention first, then what is running, what failed, and what fires next.

import { get } from '../api.js';
import {
  card, commandText, empty, errorBox, scheduleLink, pageHeader, statusBadge, taskLink, workerLink,
} from '../components.js';
import { h, replace, timeAgo, utcText } from '../dom.js';
import { repeat } from '../live.js';
import { href } from '../router.js';

const REFRESH_MS = 5000;
const LIST_SIZE = 8;

/** Each active schedule's next fire (of the first page of schedules), soonest first. */
function upcomingFires(schedules) {
  const fires = schedules
    .filter((s) => !s.paused && s.next_fire_times.length)
    .map((s) => ({ schedule: s, fire: s.next_fire_times[0] }))
    .sort((a, b) => a.fire.utc.localeCompare(b.fire.utc))
    .slice(0, LIST_SIZE);
  if (!fires.length) return empty('No active schedules.');
  return h('table', { class: 'table table-compact' },
    h('tbody', {}, fires.map(({ schedule, fire }) => h('tr', {},
      h('td', {}, timeAgo(fire.utc)),
      h('td', {}, scheduleLink(schedule)),
      h('td', {}, h('code', { class: 'cron' }, schedule.cron)),
      h('td', { class: 'mono muted' }, `${utcText(fire.utc)}`)))));
}

function taskList(tasks, emptyText, { showWorker = true } = {}) {
  if (!tasks.length) return empty(emptyText);
  return h('table', { class: 'table table-compact' },
    h('tbody', {}, tasks.map((task) => h('tr', {},
      h('td', {}, statusBadge(task.status)),
      h('td', {}, taskLink(task.task_id)),
      h('td', { class: 'cell-command' }, commandText(task.command)),
      showWorker ? h('td', {}, workerLink(task.worker_id)) : null,
      h('td', {}, timeAgo(task.completed_at ?? task.started_at ?? task.scheduled_at))))));
}

export async function overviewPage({ main, signal }) {
  document.title = 'Overview · skiplock';
  const running = h('div');
  const failures = h('div');
  const fires = h('div');
  const notice = h('div', { class: 'notice-slot' });
  main.append(
    pageHeader('Overview'),
    notice,
    h('div', { class: 'grid-2' },
      card('Running now', running, { actions: [h('a', { href: href('tasks', { status: 'running' }) }, 'All running')] }),
      card('Next cron fires', fires, { actions: [h('a', { href: href('schedules') }, 'All schedules')] })),
    card('Latest failures', failures, { actions: [h('a', { href: href('tasks', { status: 'failed' }) }, 'All failed')] }));

  async function load() {
    const [runningPage, failedPage, schedulesPage] = await Promise.all([
      get('tasks', { query: { status: 'running', limit: LIST_SIZE }, signal }),
      get('tasks', { query: { status: 'failed', limit: LIST_SIZE }, signal }),
      get('schedules', { query: { limit: 500 }, signal }),
    ]);
    replace(running, taskList(runningPage.tasks, 'Nothing is running.'));
    replace(failures, taskList(failedPage.tasks, 'No failed tasks.'));
    replace(fires, upcomingFires(schedulesPage.schedules));
    replace(notice);
  }
  await load().catch((error) => {
    if (error.name !== 'AbortError') replace(notice, errorBox(error));
  });
  repeat(load, REFRESH_MS, signal, { label: `refreshing every ${REFRESH_MS / 1000} s` });
}
