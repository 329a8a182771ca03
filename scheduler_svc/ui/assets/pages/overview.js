// Overview: what needs attention first, the fleet and backlog now, activity over the last
// hour as charts, then what is running, what failed, and what fires next.

import { get } from '../api.js';
import { lineChart } from '../chart.js';
import {
  card, commandText, empty, errorBox, scheduleLink, pageHeader, statusBadge, taskLink, workerLink,
} from '../components.js';
import { countText, durationText, h, msText, replace, timeAgo, utcText } from '../dom.js';
import { repeat } from '../live.js';
import { href } from '../router.js';

const REFRESH_MS = 5000;
const LIST_SIZE = 8;
const HISTORY_MINUTES = 60;
// The backlog has no history in the database: it is sampled while this page is open.
const BACKLOG_SAMPLES = 120;
const OLD_BACKLOG_SECONDS = 60;

/** What an operator should look at first: lost workers, missed ticks, failures, a stuck backlog. */
function problems(stats) {
  const found = [];
  const recent = stats.finished.find((f) => f.minutes === 15) ?? stats.finished[0];
  if (stats.fleet.lost) found.push([`${stats.fleet.lost} lost worker${stats.fleet.lost > 1 ? 's' : ''}`, 'workers']);
  if (stats.ticks.missed) found.push([`${stats.ticks.missed} missed cron tick${stats.ticks.missed > 1 ? 's' : ''} in the last ${stats.ticks.minutes} min`, 'schedules']);
  if (recent?.failed) found.push([`${recent.failed} failed task${recent.failed > 1 ? 's' : ''} in the last ${recent.minutes} min`, 'tasks?status=failed']);
  if (stats.oldest_due_age_seconds > OLD_BACKLOG_SECONDS) {
    found.push([`the oldest due task has waited ${durationText(stats.oldest_due_age_seconds)}`, 'tasks?status=queued']);
  }
  if (!stats.fleet.slots) found.push(['no live worker: nothing can run', 'workers']);
  if (!found.length) return null;
  return h('div', { class: 'attention', role: 'alert' },
    h('strong', {}, 'Needs attention: '),
    found.flatMap(([text, to], i) => [i ? ' · ' : '', h('a', { href: href(to.split('?')[0], Object.fromEntries(new URLSearchParams(to.split('?')[1] ?? ''))) }, text)]));
}

function tile(label, value, detail) {
  return h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, value), detail ? h('div', { class: 'tile-detail muted' }, detail) : null);
}

function tiles(stats) {
  const five = stats.finished.find((f) => f.minutes === 5);
  const delay = stats.start_delay;
  return h('div', { class: 'tiles' },
    tile('Backlog (due now)', countText(stats.tasks.queued_due),
      stats.oldest_due_age_seconds === null ? 'nothing waiting' : `oldest ${durationText(stats.oldest_due_age_seconds)}`),
    tile('Running', countText(stats.tasks.running), `${countText(stats.tasks.dispatched)} handed over`),
    tile('Workers busy', `${countText(stats.fleet.busy)} / ${countText(stats.fleet.slots)}`,
      `slots of ${stats.fleet.workers - stats.fleet.lost} live worker${stats.fleet.workers - stats.fleet.lost === 1 ? '' : 's'}`),
    tile('Finished, 5 min', countText(five ? five.succeeded + five.failed + five.cancelled : null),
      five ? `${five.failed} failed` : null),
    tile('Start delay p50 / p99', delay.p50 === null ? '–' : `${msText(delay.p50 * 1000)} / ${msText(delay.p99 * 1000)}`,
      `${countText(delay.samples)} starts, last ${delay.minutes} min`),
    tile('Scheduled later', countText(stats.tasks.queued_later),
      stats.tasks.waiting ? `${countText(stats.tasks.waiting)} waiting on other tasks` : null));
}

function charts(history, backlog) {
  const times = history.map((m) => m.minute);
  const ms = (v) => (v === null ? null : v * 1000);
  return h('div', { class: 'grid-3 charts' },
    lineChart('Finished per minute', times, [
      { name: 'succeeded', values: history.map((m) => m.succeeded), kind: 'ok' },
      { name: 'failed', values: history.map((m) => m.failed), kind: 'bad' },
      { name: 'submitted', values: history.map((m) => m.submitted), kind: 'accent' },
    ], { format: (v) => countText(Math.round(v)) }),
    lineChart('Start delay (ms)', times, [
      { name: 'p50', values: history.map((m) => ms(m.start_delay_p50)), kind: 'accent' },
      { name: 'p99', values: history.map((m) => ms(m.start_delay_p99)), kind: 'warn' },
    ], { format: (v) => msText(v) }),
    lineChart('Backlog (sampled while open)', backlog.map((b) => b.at), [
      { name: 'due now', values: backlog.map((b) => b.due), kind: 'accent' },
    ], { format: (v) => countText(Math.round(v)) }));
}

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
  const attention = h('div');
  const now = h('div');
  const trends = h('div');
  const backlog = [];
  const running = h('div');
  const failures = h('div');
  const fires = h('div');
  const notice = h('div', { class: 'notice-slot' });
  main.append(
    pageHeader('Overview'),
    notice,
    attention,
    now,
    card('Last hour', trends, { id: 'trends' }),
    h('div', { class: 'grid-2' },
      card('Running now', running, { actions: [h('a', { href: href('tasks', { status: 'running' }) }, 'All running')] }),
      card('Next cron fires', fires, { actions: [h('a', { href: href('schedules') }, 'All schedules')] })),
    card('Latest failures', failures, { actions: [h('a', { href: href('tasks', { status: 'failed' }) }, 'All failed')] }));

  async function load() {
    const [stats, history, runningPage, failedPage, schedulesPage] = await Promise.all([
      get('stats', { signal }),
      get('stats/history', { query: { minutes: HISTORY_MINUTES }, signal }),
      get('tasks', { query: { status: 'running', limit: LIST_SIZE }, signal }),
      get('tasks', { query: { status: 'failed', limit: LIST_SIZE }, signal }),
      get('schedules', { query: { limit: 500 }, signal }),
    ]);
    backlog.push({ at: stats.at, due: stats.tasks.queued_due });
    if (backlog.length > BACKLOG_SAMPLES) backlog.shift();
    replace(attention, problems(stats));
    replace(now, tiles(stats));
    replace(trends, charts(history.minutes, backlog));
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
