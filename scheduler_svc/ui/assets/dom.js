// Building the page from data without ever parsing data as markup: every string becomes a text
// node (never innerHTML), and characters a terminal would act on are shown as visible symbols.

/** h('a', {href, class, onclick}, child, …): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' || key === 'checked' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, strings and numbers as text, arrays flattened. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides and
// isolates that can make text read differently from what it is.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const CONTROL_ONE_LINE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function symbolFor(ch) {
  const code = ch.codePointAt(0);
  if (code < 0x20) return String.fromCodePoint(0x2400 + code); // ␀ … ␟ (␛ for ESC)
  if (code === 0x7f) return '\u2421'; // ␡
  return `<U+${code.toString(16).toUpperCase().padStart(4, '0')}>`;
}

/**
 * Text as a fragment in which control characters are visible: ESC shows as ␛, so an ANSI
 * colour code reads "␛[31m". With oneLine, newlines and tabs are shown as symbols too.
 */
export function visibleText(text, { oneLine = false } = {}) {
  const frag = document.createDocumentFragment();
  const pattern = oneLine ? CONTROL_ONE_LINE : CONTROL;
  pattern.lastIndex = 0;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) frag.append(text.slice(last, match.index));
    const code = match[0].codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    frag.append(h('span', { class: 'ctl', title: `U+${code}` }, symbolFor(match[0])));
    last = match.index + match[0].length;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

// -- time -----------------------------------------------------------------------------------

const localFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

/** "2026-11-30 15:04:05Z" from an RFC 3339 string, to the second. */
export function utcText(iso) {
  if (!iso) return '';
  return iso.replace('T', ' ').replace(/\.\d+/, '').replace(/\+00:00$/, 'Z');
}

export function localText(iso) {
  return iso ? localFormat.format(new Date(iso)) : '';
}

/** "4.2 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
export function durationText(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.abs(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  if (s < 3600) return two(Math.floor(s / 60), 'min', Math.floor(s % 60), 's');
  if (s < 86400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
  return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
}

/** "12 s ago", "in 3 min". */
export function relativeText(iso, now = Date.now()) {
  if (!iso) return '';
  const seconds = (Date.parse(iso) - now) / 1000;
  if (Math.abs(seconds) < 1) return 'now';
  const text = durationText(Math.abs(seconds)).replace(/ \d+ (s|min|h)$/, '');
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

/** A <time> showing "12 s ago" (kept fresh by refreshRelativeTimes), UTC and local on hover. */
export function timeAgo(iso, { prefix = '' } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  return h('time', {
    datetime: iso, 'data-relative': prefix, title: `${utcText(iso)} UTC\n${localText(iso)}`,
  }, prefix + relativeText(iso));
}

/** A duration still growing (a command running since `iso`), kept fresh like timeAgo. */
export function elapsed(iso) {
  return h('span', { class: 'elapsed', 'data-since': iso }, durationText(secondsBetween(iso)));
}

/** Every relative time and growing duration on the page is refreshed from one timer. */
export function refreshRelativeTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time[data-relative]')) {
    el.textContent = el.dataset.relative + relativeText(el.getAttribute('datetime'), now);
  }
  for (const el of root.querySelectorAll('[data-since]')) {
    el.textContent = durationText((now - Date.parse(el.dataset.since)) / 1000);
  }
}

/** Seconds between two RFC 3339 instants (the second defaults to now). */
export function secondsBetween(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? Date.parse(endIso) : Date.now();
  return (end - Date.parse(startIso)) / 1000;
}

// -- numbers --------------------------------------------------------------------------------

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function countText(n) {
  return n === null || n === undefined ? '–' : integer.format(n);
}

export function msText(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms < 1000 ? `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : durationText(ms / 1000);
}
