// Schedules in name order, with their next fire times, a page at a time.

import { get } from '../api.js';
import {
  card, commandText, empty, errorBox, scheduleLink, keyedRows, linkButton, pageHeader, pager,
} from '../components.js';
import { h, replace, timeAgo, utcText } from '../dom.js';
import { repeat } from '../live.js';
import { href, navigate } from '../router.js';

const PAGE_SIZE = 50;
const REFRESH_MS = 5000;

export function pausedBadge(paused) {
  return h('span', { class: `badge ${paused ? 'state-paused' : 'state-active'}` }, paused ? 'paused' : 'active');
}

/** The next fire time: "in 4 s", with UTC and the schedule's local time below. */
export function nextFire(schedule) {
  const next = schedule.next_fire_times?.[0];
  if (!next) return h('span', { class: 'muted' }, 'none');
  return h('div', { class: 'stack' },
    timeAgo(next.utc),
    h('small', { class: 'muted mono' }, `${utcText(next.utc)} · ${next.local.replace('T', ' ')}`));
}

function rowCells(schedule) {
  return [
    h('td', {}, scheduleLink(schedule)),
    h('td', {}, h('code', { class: 'cron' }, schedule.cron)),
    h('td', {}, schedule.timezone),
    h('td', {}, pausedBadge(schedule.paused)),
    h('td', {}, schedule.paused ? h('span', { class: 'muted' }, '–') : nextFire(schedule)),
    h('td', {}, schedule.overlap),
    h('td', { class: 'cell-command' }, commandText(schedule.command)),
  ];
}

function pausedTabs(active) {
  const tab = (value, label) => h('a', {
    class: 'tab', href: href('schedules', value ? { paused: value } : undefined),
    'aria-current': (active ?? '') === value ? 'page' : null,
  }, label);
  return h('nav', { class: 'tabs', 'aria-label': 'Filter by state' },
    tab('', 'All'), tab('false', 'Active'), tab('true', 'Paused'));
}

export async function schedulesPage({ main, query, signal, canWrite }) {
  document.title = 'Schedules · skiplock';
  const view = {
    name_prefix: query.get('name_prefix') ?? '',
    paused: query.get('paused') ?? '',
    cursor: query.get('cursor') ?? '',
  };
  const search = h('input', {
    type: 'search', name: 'name_prefix', value: view.name_prefix, 'data-search': true,
    placeholder: 'Name starts with…  ( / )', 'aria-label': 'Filter schedules by name prefix',
    class: 'search', autocomplete: 'off',
  });
  const searchForm = h('form', { class: 'search-form', role: 'search' }, search);
  searchForm.addEventListener('submit', (event) => {
    event.preventDefault();
    navigate(href('schedules', { ...(view.paused && { paused: view.paused }), ...(search.value && { name_prefix: search.value }) }));
  });
  const notice = h('div', { class: 'notice-slot' });
  const tbody = h('tbody');
  const rows = keyedRows(tbody, (s) => s.id, rowCells);
  const footer = h('div', { class: 'table-footer' });
  main.append(
    pageHeader('Schedules', {
      subtitle: 'Cron schedules in name order',
      actions: [canWrite ? linkButton('New schedule', href('schedules/new'), { kind: 'btn-primary' }) : null],
    }),
    h('div', { class: 'toolbar' }, pausedTabs(view.paused), searchForm),
    notice,
    card(null, [h('div', { class: 'table-scroll' }, h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, ['Name', 'Expression', 'Time zone', 'State', 'Next fire', 'Overlap', 'Command']
        .map((label) => h('th', { scope: 'col' }, label)))),
      tbody)), footer], { className: 'card-flush' }));

  const filters = { ...(view.name_prefix && { name_prefix: view.name_prefix }), ...(view.paused && { paused: view.paused }) };
  async function load() {
    const page = await get('schedules', { query: { ...filters, limit: PAGE_SIZE, cursor: view.cursor }, signal });
    rows.show(page.schedules);
    replace(notice);
    replace(footer,
      page.schedules.length ? null : empty(view.name_prefix || view.paused ? 'No schedules match.' : 'No schedules yet.'),
      pager({
        first: view.cursor ? href('schedules', Object.keys(filters).length ? filters : undefined) : null,
        next: page.next_cursor ? href('schedules', { ...filters, cursor: page.next_cursor }) : null,
      }));
  }
  await load().catch((error) => {
    if (error.name !== 'AbortError') replace(notice, errorBox(error));
  });
  repeat(load, REFRESH_MS, signal, { label: `refreshing every ${REFRESH_MS / 1000} s` });
}
