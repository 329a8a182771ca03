// Workers: every worker the coordinators know, its slots and heartbeat, draining or lost.

import { get } from '../api.js';
import { card, empty, firstLoad, keyedRows, pageHeader, workerLink } from '../components.js';
import { durationText, h, replace, timeAgo } from '../dom.js';
import { repeat } from '../live.js';

const REFRESH_MS = 2000;

export function workerState(worker) {
  if (worker.lost) return h('span', { class: 'badge status-failed' }, 'lost');
  if (worker.draining) return h('span', { class: 'badge status-dispatched' }, 'draining');
  return h('span', { class: 'badge status-succeeded' }, 'live');
}

export function slotsBar(worker) {
  const bar = h('span', { class: 'slots-bar', role: 'img', 'aria-label': `${worker.busy} of ${worker.slots} slots busy` });
  for (let i = 0; i < worker.slots; i += 1) bar.append(h('span', { class: i < worker.busy ? 'slot slot-busy' : 'slot' }));
  return h('span', { class: 'slots' }, bar, ` ${worker.busy} / ${worker.slots}`);
}

function cells(worker) {
  return [
    h('td', {}, workerLink(worker.id)),
    h('td', {}, workerState(worker)),
    h('td', {}, slotsBar(worker)),
    h('td', { class: 'num' }, durationText(worker.heartbeat_age_seconds)),
    h('td', { class: 'mono small' }, worker.address),
    h('td', {}, timeAgo(worker.registered_at)),
  ];
}

export async function workersPage({ main, signal }) {
  document.title = 'Workers · skiplock';
  const summary = h('p', { class: 'muted' });
  const tbody = h('tbody');
  const table = h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'workers-table' },
    h('thead', {}, h('tr', {}, ['Worker', 'State', 'Busy slots', 'Heartbeat age', 'Address', 'Registered']
      .map((label) => h('th', { scope: 'col' }, label)))),
    tbody));
  const body = h('div');
  const header = pageHeader('Workers');
  main.append(header, card(null, h('div', {}, summary, body)));
  const rows = keyedRows(tbody, (w) => w.id, cells);

  async function load() {
    const { workers } = await get('workers', { signal });
    const live = workers.filter((w) => !w.lost);
    const busy = live.reduce((n, w) => n + w.busy, 0);
    const slots = live.reduce((n, w) => n + w.slots, 0);
    const lost = workers.length - live.length;
    summary.textContent = `${live.length} live of ${workers.length} · ${busy} of ${slots} slots busy`
      + (lost ? ` · ${lost} lost` : '');
    if (!workers.length) {
      replace(body, empty('No worker has sent a heartbeat yet.'));
      return;
    }
    if (!body.contains(table)) replace(body, table);
    rows.show(workers);
  }
  if (!(await firstLoad(load, main, header))) return;
  repeat(load, REFRESH_MS, signal, { label: `refreshing every ${REFRESH_MS / 1000} s` });
}
