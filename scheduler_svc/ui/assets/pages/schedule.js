// One schedule: its settings, next fire times (UTC and its own zone), the tick ledger with
// missed and skipped ticks marked, and pause / resume / trigger / edit / delete.

import { del, get, post } from '../api.js';
import {
  button, card, confirmDialog, empty, facts, firstLoad, keyedRows, linkButton, outcomeBadge,
  pageHeader, statusBadge, taskLink, toast,
} from '../components.js';
import { durationText, h, replace, secondsBetween, timeAgo, utcText, visibleText } from '../dom.js';
import { repeat } from '../live.js';
import { href, navigate } from '../router.js';
import { pausedBadge } from './schedules.js';

const TICKS_PAGE = 25;
const PREVIEW_COUNT = 10;
const REFRESH_MS = 2000;

function settings(schedule) {
  return facts([
    ['State', pausedBadge(schedule.paused)],
    ['Expression', h('code', { class: 'cron' }, schedule.cron)],
    ['Time zone', schedule.timezone],
    ['Overlap', schedule.overlap],
    ['Catch-up window', durationText(schedule.catchup_window_seconds)],
    ['Jitter', schedule.jitter_seconds ? durationText(schedule.jitter_seconds) : 'none'],
    ['Timeout', schedule.timeout_seconds ? durationText(schedule.timeout_seconds) : 'none'],
    ['Retries', `${schedule.max_retries} (backoff ${durationText(schedule.retry_backoff_seconds)})`],
    ['Created', timeAgo(schedule.created_at)],
    ['Changed', timeAgo(schedule.updated_at)],
    ['Fires from', timeAgo(schedule.active_from)],
  ]);
}

function fireTimes(fires, timezone) {
  if (!fires.length) return empty('No upcoming fire times.');
  return h('table', { class: 'table table-compact' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'In'), h('th', { scope: 'col' }, 'UTC'), h('th', { scope: 'col' }, timezone))),
    h('tbody', {}, fires.map((fire) => h('tr', {},
      h('td', {}, timeAgo(fire.utc)),
      h('td', { class: 'mono' }, utcText(fire.utc)),
      h('td', { class: 'mono' }, fire.local.replace('T', ' '))))));
}

function tickCells(tick) {
  const lag = secondsBetween(tick.fire_time, tick.recorded_at);
  return [
    h('td', { class: 'mono' }, utcText(tick.fire_time)),
    h('td', { class: 'mono' }, tick.fire_time_local.replace('T', ' ')),
    h('td', {}, outcomeBadge(tick.outcome)),
    h('td', {}, tick.task_id ? taskLink(tick.task_id) : h('span', { class: 'muted' }, '–')),
    h('td', {}, tick.task_status ? statusBadge(tick.task_status) : h('span', { class: 'muted' }, '–')),
    h('td', { class: 'num', title: `recorded ${utcText(tick.recorded_at)} UTC` }, durationText(lag)),
  ];
}

export async function schedulePage({ main, params, signal, canWrite }) {
  const id = params.id;
  const actions = h('div', { class: 'page-actions' });
  const header = pageHeader('Schedule', { back: { href: href('schedules'), label: 'Schedules' } });
  header.querySelector('.page-actions').replaceWith(actions);
  const title = header.querySelector('h1');
  const subtitle = h('p', { class: 'subtitle' });
  title.after(subtitle);
  const commandBox = h('pre', { class: 'command-block' });
  const settingsBox = h('div');
  const firesBox = h('div');
  const tbody = h('tbody');
  const ticks = keyedRows(tbody, (tick) => tick.fire_time, tickCells);
  const ticksFooter = h('div', { class: 'table-footer' });
  main.append(header,
    h('div', { class: 'grid-2' },
      h('div', { class: 'stack-gap' }, card('Command', commandBox), card('Settings', settingsBox)),
      card('Next fire times', firesBox)),
    card('Tick ledger', [
      h('div', { class: 'table-scroll' }, h('table', { class: 'table ticks-table' },
        h('thead', {}, h('tr', {}, ['Fire time (UTC)', 'Local time', 'Outcome', 'Task', 'Task status', 'Recorded after']
          .map((label) => h('th', { scope: 'col' }, label)))),
        tbody)),
      ticksFooter], { className: 'card-flush' }));

  let schedule = null;
  let olderCursor;

  async function act(verb) {
    try {
      const answer = await post(`schedules/${id}/${verb}`, undefined, { signal });
      if (verb === 'trigger') {
        toast('Run started.', { kind: 'success', link: { href: href(`tasks/${answer.task.task_id}`), label: answer.task.task_id.slice(0, 8) } });
      } else {
        schedule = answer;
        showSchedule();
        toast(verb === 'pause' ? 'Schedule paused.' : 'Schedule resumed.', { kind: 'success' });
      }
      refresher.now();
    } catch (error) {
      toast(error.message, { kind: 'error' });
    }
  }

  async function remove() {
    const ok = await confirmDialog(`Delete ${schedule.name}?`, 'It will not fire again. Runs already started go on.', { confirmLabel: 'Delete', danger: true });
    if (!ok) return;
    try {
      await del(`schedules/${id}`, { signal });
      toast('Schedule deleted.', { kind: 'success' });
      navigate(href('schedules'));
    } catch (error) {
      toast(error.message, { kind: 'error' });
    }
  }

  function showSchedule() {
    document.title = `${schedule.name} · skiplock`;
    title.textContent = schedule.name;
    replace(subtitle, h('code', { class: 'cron' }, schedule.cron), ` in ${schedule.timezone} · `, pausedBadge(schedule.paused));
    commandBox.replaceChildren(visibleText(schedule.command));
    replace(settingsBox, settings(schedule));
    replace(actions, canWrite ? [
      schedule.paused
        ? button('Resume', () => act('resume'), { kind: 'btn-primary', 'data-action': 'resume' })
        : button('Pause', () => act('pause'), { 'data-action': 'pause' }),
      button('Trigger now', () => act('trigger'), { 'data-action': 'trigger' }),
      linkButton('Edit', href(`schedules/${id}/edit`)),
      button('Delete', remove, { kind: 'btn-danger-ghost', 'data-action': 'delete' }),
    ] : null);
  }

  async function loadOlder() {
    const page = await get(`schedules/${id}/ticks`, { query: { limit: TICKS_PAGE, cursor: olderCursor }, signal });
    ticks.show([...ticks.items(), ...page.ticks]);
    olderCursor = page.next_cursor;
    showTicksFooter();
  }

  function showTicksFooter() {
    replace(ticksFooter,
      ticks.size ? null : empty('No ticks yet: the first one is recorded at the next fire time.'),
      olderCursor ? h('div', { class: 'pager' }, button('Older ticks', () => loadOlder().catch((e) => toast(e.message, { kind: 'error' })), { kind: 'btn-small' })) : null);
  }

  async function load() {
    const [fresh, preview, newest] = await Promise.all([
      get(`schedules/${id}`, { signal }),
      get(`schedules/${id}/preview`, { query: { count: PREVIEW_COUNT }, signal }),
      get(`schedules/${id}/ticks`, { query: { limit: TICKS_PAGE }, signal }),
    ]);
    schedule = fresh;
    showSchedule();
    replace(firesBox, fireTimes(preview.fire_times, schedule.timezone));
    // The newest page, plus whatever older pages were already loaded.
    const newestTimes = new Set(newest.ticks.map((t) => t.fire_time));
    const oldest = newest.ticks.at(-1)?.fire_time;
    const older = ticks.items().filter((t) => !newestTimes.has(t.fire_time) && oldest && t.fire_time < oldest);
    const hadTicks = ticks.size > 0;
    ticks.show([...newest.ticks, ...older], { markNew: hadTicks });
    if (olderCursor === undefined || !older.length) olderCursor = newest.next_cursor;
    showTicksFooter();
  }

  if (!(await firstLoad(load, main, header))) return;
  const refresher = repeat(load, REFRESH_MS, signal, { label: `refreshing every ${REFRESH_MS / 1000} s` });
}
