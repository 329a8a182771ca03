// Pieces every page uses: badges, cards, fact lists, dialogs, toasts, pagers.

import { isAbort } from './api.js';
import { h, replace, visibleText } from './dom.js';
import { href } from './router.js';

export const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
export const TASK_STATUSES = ['waiting', 'queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'];

const OUTCOME_LABELS = {
  started: 'started',
  skipped_overlap: 'skipped: overlap',
  skipped_paused: 'skipped: paused',
  missed: 'missed',
  cancelled_previous: 'started, cancelled previous',
};

/** A status pill: the word itself is always shown, colour only adds to it. */
export function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, status ?? '–');
}

export function outcomeBadge(outcome) {
  return h('span', { class: `badge outcome-${outcome}` }, OUTCOME_LABELS[outcome] ?? outcome);
}

export function pageHeader(title, { subtitle, actions = [], back } = {}) {
  return h('div', { class: 'page-header' },
    h('div', { class: 'page-title' },
      back ? h('a', { class: 'back-link', href: back.href }, `← ${back.label}`) : null,
      h('h1', { tabindex: '-1' }, title),
      subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
    h('div', { class: 'page-actions' }, actions));
}

export function card(title, body, { actions = [], id, className = '' } = {}) {
  return h('section', { class: `card ${className}`, id, 'aria-label': title },
    title ? h('div', { class: 'card-head' }, h('h2', {}, title), h('div', { class: 'card-actions' }, actions)) : null,
    h('div', { class: 'card-body' }, body));
}

/** <dl> of [label, value] pairs; values may be nodes or strings. */
export function facts(pairs) {
  return h('dl', { class: 'facts' },
    pairs.filter(Boolean).map(([label, value]) => h('div', { class: 'fact' },
      h('dt', {}, label), h('dd', {}, value ?? h('span', { class: 'muted' }, '–')))));
}

export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

/** A command as code on one line, control characters and newlines visible. */
export function commandText(command) {
  return h('code', { class: 'command', title: command }, visibleText(command ?? '', { oneLine: true }));
}

export function idLink(path, id, label, { mono = true } = {}) {
  return h('a', { class: mono ? 'mono id-link' : 'id-link', href: href(path), title: id }, label ?? id);
}

export function scheduleLink(schedule) {
  return idLink(`schedules/${schedule.id}`, schedule.id, schedule.name, { mono: false });
}

export function taskLink(id) {
  return idLink(`tasks/${id}`, id, id.slice(0, 8));
}

export function workerLink(workerId) {
  if (!workerId) return h('span', { class: 'muted' }, '–');
  return idLink(`workers/${encodeURIComponent(workerId)}`, workerId, workerId);
}

export function button(label, onclick, { kind = '', type = 'button', ...attrs } = {}) {
  return h('button', { class: `btn ${kind}`, type, onclick, ...attrs }, label);
}

export function linkButton(label, to, { kind = '' } = {}) {
  return h('a', { class: `btn ${kind}`, href: to }, label);
}

/** An error shown where the data would have been. */
export function errorBox(error) {
  return h('div', { class: 'alert alert-error', role: 'alert' }, error?.message ?? String(error));
}

/** Run `load` and show its error in `target` instead of throwing; aborts are silent. */
export async function guarded(target, load) {
  try {
    return await load();
  } catch (error) {
    if (!isAbort(error)) replace(target, errorBox(error));
    return undefined;
  }
}

/** A detail page's first load: on failure the page is its header and the error, and false. */
export async function firstLoad(load, main, header) {
  try {
    await load();
    return true;
  } catch (error) {
    if (!isAbort(error)) replace(main, header, errorBox(error));
    return false;
  }
}

let toastSerial = 0;

export function toast(message, { kind = 'info', link } = {}) {
  const box = document.getElementById('toasts');
  const id = `toast-${++toastSerial}`;
  const item = h('div', { class: `toast toast-${kind}`, id },
    h('span', {}, message),
    link ? h('a', { href: link.href }, link.label) : null,
    h('button', { class: 'toast-close', type: 'button', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 12000 : 6000);
}

/** A modal <dialog>; resolves true when the confirm button is pressed. */
export function confirmDialog(title, message, { confirmLabel = 'Confirm', danger = false } = {}) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'dialog', 'aria-label': title },
      h('form', { method: 'dialog' },
        h('h2', {}, title),
        h('p', {}, message),
        h('div', { class: 'dialog-actions' },
          h('button', { class: 'btn', value: 'cancel', type: 'submit' }, 'Keep'),
          h('button', { class: `btn ${danger ? 'btn-danger' : 'btn-primary'}`, value: 'ok', type: 'submit' }, confirmLabel))));
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** "← Newest" and "Older →" links for cursor pages. */
export function pager({ first, next }) {
  if (!first && !next) return null;
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    first ? h('a', { class: 'btn btn-small', href: first }, '← Newest') : h('span'),
    next ? h('a', { class: 'btn btn-small', href: next, rel: 'next' }, 'Older →') : null);
}

export function copyButton(text, label = 'Copy') {
  return button(label, async (event) => {
    await navigator.clipboard?.writeText(text).catch(() => {});
    event.target.textContent = 'Copied';
    setTimeout(() => { event.target.textContent = label; }, 1200);
  }, { kind: 'btn-ghost btn-small', title: `Copy ${text}` });
}

/** A labelled form field with a slot for its error message (filled by showFieldErrors). */
export function field(label, control, { hint, name } = {}) {
  const errorId = `${control.id || name}-error`;
  control.setAttribute('aria-describedby', errorId);
  return h('div', { class: 'field', 'data-field': name ?? control.name },
    h('label', { for: control.id }, label),
    control,
    hint ? h('small', { class: 'hint' }, hint) : null,
    h('small', { class: 'field-error', id: errorId, role: 'alert' }));
}

/** Show {field: message} under each named field; messages with no field go to `fallback`. */
export function showFieldErrors(form, errors, fallback) {
  for (const slot of form.querySelectorAll('.field-error')) slot.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const unplaced = [];
  for (const [name, message] of Object.entries(errors)) {
    const wrapper = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!wrapper) {
      unplaced.push(name ? `${name}: ${message}` : message);
      continue;
    }
    wrapper.querySelector('.field-error').textContent = message;
    wrapper.querySelector('input, textarea, select')?.setAttribute('aria-invalid', 'true');
  }
  if (fallback) replace(fallback, unplaced.length ? errorBox(new Error(unplaced.join('; '))) : null);
}

/** The indicator in the top bar: how fresh the page is ("live", "every 2 s", …). */
export function setLiveState(text, kind = 'live') {
  const el = document.getElementById('live-state');
  el.textContent = text;
  el.className = `live-state live-${kind}`;
}

// Repainting a whole table of flashing rows each second costs more than it tells.
const MAX_FLASHING_ROWS = 10;

/**
 * A table body whose rows are updated in place by key: a row is rebuilt only when its item
 * changed, moved only when the order changed, and new rows can be marked for a moment.
 */
export function keyedRows(tbody, keyOf, cellsOf) {
  const rows = new Map(); // key → {row, item, signature}
  return {
    show(items, { markNew = false } = {}) {
      // A few new rows flash; a page that turned over entirely would only flicker.
      const fresh = items.filter((item) => !rows.has(keyOf(item))).length;
      const flash = markNew && fresh <= MAX_FLASHING_ROWS;
      const keep = new Set();
      let previous = null;
      for (const item of items) {
        const key = keyOf(item);
        keep.add(key);
        let entry = rows.get(key);
        if (!entry) {
          entry = { row: h('tr', { class: flash ? 'row-new' : '', 'data-key': key }) };
          rows.set(key, entry);
        }
        const signature = JSON.stringify(item);
        if (entry.signature !== signature) {
          entry.signature = signature;
          entry.item = item;
          replace(entry.row, cellsOf(item));
        }
        const wanted = previous ? previous.nextSibling : tbody.firstChild;
        if (wanted !== entry.row) tbody.insertBefore(entry.row, wanted);
        previous = entry.row;
      }
      for (const [key, entry] of rows) {
        if (!keep.has(key)) {
          entry.row.remove();
          rows.delete(key);
        }
      }
    },
    /** Replace the items with these keys, keeping every other row as it is. */
    update(items) {
      const fresh = new Map(items.map((item) => [keyOf(item), item]));
      this.show(this.items().map((item) => fresh.get(keyOf(item)) ?? item));
    },
    items() {
      return [...rows.values()].map((entry) => entry.item);
    },
    get size() { return rows.size; },
  };
}
