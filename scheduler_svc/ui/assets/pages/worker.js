// One worker: its state, slots and heartbeat, and the attempts it holds open now.

import { get } from '../api.js';
import {
  card, commandText, empty, facts, firstLoad, pageHeader, statusBadge, taskLink,
} from '../components.js';
import { durationText, elapsed, h, replace, timeAgo } from '../dom.js';
import { repeat } from '../live.js';
import { href } from '../router.js';
import { slotsBar, workerState } from './workers.js';

const REFRESH_MS = 2000;

function details(worker) {
  return facts([
    ['State', workerState(worker)],
    ['Busy slots', slotsBar(worker)],
    ['Last heartbeat', h('span', {}, timeAgo(worker.last_heartbeat_at), ` (${durationText(worker.heartbeat_age_seconds)} ago)`)],
    ['Address', h('span', { class: 'mono' }, worker.address)],
    ['Registered', timeAgo(worker.registered_at)],
    worker.lost ? ['Declared lost', timeAgo(worker.lost_at)] : null,
  ]);
}

function heldAttempts(worker) {
  if (!worker.attempts.length) return empty(worker.lost ? 'A lost worker holds nothing.' : 'Idle: no attempt is open on this worker.');
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table' },
    h('thead', {}, h('tr', {}, ['Task', 'Attempt', 'Status', 'Command', 'Running for']
      .map((label) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, worker.attempts.map((a) => h('tr', {},
      h('td', {}, taskLink(a.task_id)),
      h('td', { class: 'num' }, a.attempt),
      h('td', {}, statusBadge(a.status)),
      h('td', { class: 'cell-command' }, commandText(a.command)),
      h('td', { class: 'num' }, a.started_at ? elapsed(a.started_at) : '–'))))));
}

export async function workerPage({ main, params, signal }) {
  const id = params.id;
  document.title = `Worker ${id} · skiplock`;
  const header = pageHeader(`Worker ${id}`, { back: { href: href('workers'), label: 'Workers' } });
  const about = h('div');
  const held = h('div');
  main.append(header, card('Details', about), card('Open attempts', held));

  async function load() {
    const worker = await get(`workers/${encodeURIComponent(id)}`, { signal });
    replace(about, details(worker));
    replace(held, heldAttempts(worker));
  }
  if (!(await firstLoad(load, main, header))) return;
  repeat(load, REFRESH_MS, signal, { label: `refreshing every ${REFRESH_MS / 1000} s` });
}
