// Create or edit a schedule. The API's own validation errors are shown under their fields.

import { ApiError, get, patch, post } from '../api.js';
import { card, errorBox, field, pageHeader, showFieldErrors, toast } from '../components.js';
import { h, replace, utcText } from '../dom.js';
import { href, navigate } from '../router.js';

const OVERLAP = {
  skip: 'skip — a tick is skipped while the previous run is unfinished',
  allow: 'allow — runs may overlap',
  cancel_previous: 'cancel_previous — a tick cancels the unfinished run, then starts',
};

function zoneList() {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return h('datalist', { id: 'timezones' }, ['UTC', ...zones].map((zone) => h('option', { value: zone })));
}

function input(name, attrs = {}) {
  return h('input', { id: `schedule-${name}`, name, autocomplete: 'off', ...attrs });
}

function numberInput(name, attrs = {}) {
  return input(name, { type: 'number', step: 'any', min: '0', ...attrs });
}

/** The form's controls, filled from `schedule` when editing. */
function controls(schedule) {
  const value = (name, fallback = '') => schedule?.[name] ?? fallback;
  return {
    name: input('name', { required: true, maxlength: '200', value: value('name'), placeholder: 'nightly-report' }),
    cron: input('cron', { required: true, class: 'mono', spellcheck: 'false', value: value('cron'), placeholder: '0 9 * * MON-FRI' }),
    timezone: input('timezone', { list: 'timezones', value: value('timezone', 'UTC'), spellcheck: 'false' }),
    command: h('textarea', { id: 'schedule-command', name: 'command', rows: '3', class: 'mono', required: true, spellcheck: 'false', placeholder: 'df -h /' }, value('command')),
    overlap: h('select', { id: 'schedule-overlap', name: 'overlap' },
      Object.entries(OVERLAP).map(([key, label]) => h('option', { value: key, selected: value('overlap', 'skip') === key }, label))),
    catchup_window_seconds: numberInput('catchup_window_seconds', { step: '1', min: '1', value: value('catchup_window_seconds', 60) }),
    jitter_seconds: numberInput('jitter_seconds', { value: value('jitter_seconds', 0) }),
    timeout_seconds: numberInput('timeout_seconds', { value: value('timeout_seconds'), placeholder: 'none' }),
    max_retries: numberInput('max_retries', { step: '1', max: '100', value: value('max_retries', 0) }),
    retry_backoff_seconds: numberInput('retry_backoff_seconds', { value: value('retry_backoff_seconds', 1) }),
    paused: input('paused', { type: 'checkbox', checked: value('paused', false) }),
  };
}

/** The request body: numbers as numbers, an empty timeout as "none". */
function bodyFrom(c) {
  const number = (el) => (el.value === '' ? null : Number(el.value));
  return {
    name: c.name.value,
    cron: c.cron.value.trim(),
    timezone: c.timezone.value.trim() || 'UTC',
    command: c.command.value,
    overlap: c.overlap.value,
    catchup_window_seconds: number(c.catchup_window_seconds),
    jitter_seconds: number(c.jitter_seconds) ?? 0,
    timeout_seconds: number(c.timeout_seconds),
    max_retries: number(c.max_retries) ?? 0,
    retry_backoff_seconds: number(c.retry_backoff_seconds) ?? 1,
    paused: c.paused.checked,
  };
}

const PREVIEW_DELAY_MS = 300;

/** The next fires of the expression as typed, or the API's error under the field, kept current
 * while the expression or zone changes (debounced; a stale answer never overwrites a newer one). */
function livePreview(c, signal) {
  const box = h('div', { class: 'cron-preview', 'aria-live': 'polite', id: 'cron-preview' });
  const cronError = () => c.cron.closest('.field')?.querySelector('.field-error');
  let timer = null;
  let latest = 0;
  const refresh = async () => {
    const asked = ++latest;
    const cron = c.cron.value.trim();
    const timezone = c.timezone.value.trim() || 'UTC';
    if (!cron) { replace(box); return; }
    try {
      const preview = await get('schedules/preview', { query: { cron, timezone, count: 5 }, signal });
      if (asked !== latest) return;
      c.cron.removeAttribute('aria-invalid');
      if (cronError()) cronError().textContent = '';
      replace(box, h('small', { class: 'hint' }, 'Next fires:'),
        h('ol', { class: 'mono' }, preview.fire_times.map((fire) =>
          h('li', {}, `${utcText(fire.utc)}  ·  ${fire.local.replace('T', ' ')} ${timezone}`))));
    } catch (error) {
      if (error.name === 'AbortError' || asked !== latest) return;
      const message = error instanceof ApiError ? (Object.values(error.fieldErrors)[0] ?? error.message) : error.message;
      replace(box);
      c.cron.setAttribute('aria-invalid', 'true');
      if (cronError()) cronError().textContent = message;
    }
  };
  const schedule = () => { clearTimeout(timer); timer = setTimeout(refresh, PREVIEW_DELAY_MS); };
  c.cron.addEventListener('input', schedule);
  c.timezone.addEventListener('input', schedule);
  c.timezone.addEventListener('change', schedule);
  refresh();
  return box;
}

function formLayout(c, formError, submitLabel, cancelHref, preview) {
  return [
    zoneList(),
    h('div', { class: 'field-grid' },
      field('Name', c.name, { name: 'name' }),
      field('Time zone', c.timezone, { name: 'timezone', hint: 'IANA name; the expression is read in this zone.' })),
    field('Cron expression', c.cron, {
      name: 'cron',
      hint: '5 fields (min hour day month weekday), 6 with seconds first, @daily, @hourly, or @every 30s.',
    }),
    preview,
    field('Command', c.command, { name: 'command', hint: 'Each run is a task: bash -c COMMAND on a worker.' }),
    field('When a run is still going', c.overlap, { name: 'overlap' }),
    h('div', { class: 'field-grid field-grid-3' },
      field('Catch-up window (s)', c.catchup_window_seconds, { name: 'catchup_window_seconds', hint: 'A tick later than this is recorded as missed.' }),
      field('Jitter (s)', c.jitter_seconds, { name: 'jitter_seconds', hint: 'Each run starts up to this much later.' }),
      field('Timeout (s)', c.timeout_seconds, { name: 'timeout_seconds', hint: 'Empty: no timeout.' }),
      field('Max retries', c.max_retries, { name: 'max_retries' }),
      field('Retry backoff (s)', c.retry_backoff_seconds, { name: 'retry_backoff_seconds', hint: 'Doubles after each failure.' })),
    h('div', { class: 'field field-check', 'data-field': 'paused' },
      c.paused, h('label', { for: c.paused.id }, 'Paused (ticks are recorded as skipped, nothing runs)'),
      h('small', { class: 'field-error', role: 'alert' })),
    formError,
    h('div', { class: 'form-actions' },
      h('a', { class: 'btn', href: cancelHref }, 'Cancel'),
      h('button', { class: 'btn btn-primary', type: 'submit' }, submitLabel)),
  ];
}

export async function scheduleFormPage({ main, params, signal, canWrite }) {
  const editing = Boolean(params.id);
  document.title = `${editing ? 'Edit' : 'New'} schedule · skiplock`;
  const back = editing
    ? { href: href(`schedules/${params.id}`), label: 'Schedule' }
    : { href: href('schedules'), label: 'Schedules' };
  if (!canWrite) {
    main.append(pageHeader(editing ? 'Edit schedule' : 'New schedule', { back }),
      errorBox(new Error('This token may only read: schedules cannot be created or changed with it.')));
    return;
  }
  let schedule = null;
  if (editing) {
    try {
      schedule = await get(`schedules/${params.id}`, { signal });
    } catch (error) {
      if (error.name !== 'AbortError') main.append(pageHeader('Edit schedule', { back }), errorBox(error));
      return;
    }
  }
  const c = controls(schedule);
  const formError = h('div', { class: 'form-error' });
  const form = h('form', { class: 'form', novalidate: true },
    formLayout(c, formError, editing ? 'Save changes' : 'Create schedule', back.href, livePreview(c, signal)));
  main.append(
    pageHeader(editing ? `Edit ${schedule.name}` : 'New schedule', { back }),
    card(null, form, { className: 'form-card' }));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const body = bodyFrom(c);
      const saved = editing
        ? await patch(`schedules/${params.id}`, body, { signal })
        : await post('schedules', body, { signal });
      toast(editing ? 'Schedule saved.' : 'Schedule created.', { kind: 'success' });
      navigate(href(`schedules/${saved.id}`));
    } catch (error) {
      if (error.name === 'AbortError') return;
      const errors = error instanceof ApiError ? error.fieldErrors : {};
      if (error.status === 409 && /named/.test(error.message)) errors.name = error.message;
      if (!Object.keys(errors).length) errors[''] = error.message;
      showFieldErrors(form, errors, formError);
      form.querySelector('[aria-invalid="true"]')?.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(formError);
  c.name.focus();
}
