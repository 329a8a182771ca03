// The "New task" dialog: a command to run now, after a delay, or at an instant.

import { ApiError, post } from '../api.js';
import { button, field, showFieldErrors, toast } from '../components.js';
import { h } from '../dom.js';
import { href } from '../router.js';

const UNITS = { seconds: 1, minutes: 60, hours: 3600 };

function numberInput(id, name, attrs = {}) {
  return h('input', { id, name, type: 'number', inputmode: 'decimal', ...attrs });
}

/** The request body from the form, or throws with {field: message} for what cannot be sent. */
function bodyFrom(form) {
  const data = new FormData(form);
  const body = { command: data.get('command') };
  const when = data.get('when');
  if (when === 'delay') {
    const amount = Number(data.get('delay'));
    if (data.get('delay') === '' || Number.isNaN(amount)) {
      throw new ApiError(422, [{ loc: ['body', 'when'], msg: 'enter how long to wait' }]);
    }
    body.delay_seconds = amount * UNITS[data.get('delay_unit')];
  } else if (when === 'at') {
    const value = data.get('at');
    if (!value) throw new ApiError(422, [{ loc: ['body', 'when'], msg: 'pick an instant' }]);
    const instant = data.get('at_zone') === 'utc' ? new Date(`${value}Z`) : new Date(value);
    if (Number.isNaN(instant.getTime())) {
      throw new ApiError(422, [{ loc: ['body', 'when'], msg: 'not a valid date and time' }]);
    }
    body.scheduled_at = instant.toISOString();
  }
  for (const name of ['timeout_seconds', 'max_retries', 'retry_backoff_seconds']) {
    const raw = data.get(name);
    if (raw !== '' && raw !== null) body[name] = Number(raw);
  }
  return body;
}

function whenField() {
  const radio = (value, label, checked = false) => h('label', { class: 'choice' },
    h('input', { type: 'radio', name: 'when', value, checked }), label);
  const delay = h('span', { class: 'inline-inputs' },
    numberInput('delay', 'delay', { min: '0', step: 'any', value: '10', 'aria-label': 'Delay' }),
    h('select', { name: 'delay_unit', 'aria-label': 'Delay unit' },
      Object.keys(UNITS).map((unit) => h('option', { value: unit }, unit))));
  const at = h('span', { class: 'inline-inputs' },
    h('input', { type: 'datetime-local', name: 'at', step: '1', 'aria-label': 'Instant' }),
    h('select', { name: 'at_zone', 'aria-label': 'Time zone of the instant' },
      h('option', { value: 'local' }, `local time (${Intl.DateTimeFormat().resolvedOptions().timeZone})`),
      h('option', { value: 'utc' }, 'UTC')));
  return h('fieldset', { class: 'field when', 'data-field': 'when' },
    h('legend', {}, 'When'),
    h('div', { class: 'choices' },
      radio('now', 'Now', true),
      h('div', { class: 'choice-row' }, radio('delay', 'In'), delay),
      h('div', { class: 'choice-row' }, radio('at', 'At'), at)),
    h('small', { class: 'field-error', role: 'alert' }));
}

/** Open the dialog; onCreated(task) after the scheduler accepted the task. */
export function openSubmitDialog({ onCreated } = {}) {
  // One key per dialog: sending again after a lost answer cannot queue the command twice.
  const idempotencyKey = crypto.randomUUID();
  const command = h('textarea', {
    id: 'submit-command', name: 'command', rows: '3', required: true, spellcheck: 'false',
    class: 'mono', placeholder: 'echo hello from skiplock',
  });
  const formError = h('div', { class: 'form-error' });
  const submit = h('button', { class: 'btn btn-primary', type: 'submit' }, 'Queue task');
  const form = h('form', { class: 'form', novalidate: true },
    h('h2', {}, 'New task'),
    field('Command', command, { name: 'command', hint: 'Runs as bash -c COMMAND on a worker.' }),
    whenField(),
    h('details', { class: 'more' },
      h('summary', {}, 'Timeout and retries'),
      h('div', { class: 'field-grid' },
        field('Timeout (s)', numberInput('submit-timeout', 'timeout_seconds', { min: '0', step: 'any', placeholder: 'none' }), { name: 'timeout_seconds' }),
        field('Max retries', numberInput('submit-retries', 'max_retries', { min: '0', max: '100', step: '1', placeholder: '0' }), { name: 'max_retries' }),
        field('Retry backoff (s)', numberInput('submit-backoff', 'retry_backoff_seconds', { min: '0', step: 'any', placeholder: '1' }), { name: 'retry_backoff_seconds' }))),
    formError,
    h('div', { class: 'dialog-actions' },
      button('Cancel', () => dialog.close()),
      submit));
  const dialog = h('dialog', { class: 'dialog dialog-wide', 'aria-label': 'New task' }, form);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const task = await post('schedule', bodyFrom(form), {
        headers: { 'Idempotency-Key': idempotencyKey },
      });
      dialog.close();
      toast('Task queued.', { kind: 'success', link: { href: href(`tasks/${task.task_id}`), label: task.task_id.slice(0, 8) } });
      onCreated?.(task);
    } catch (error) {
      const errors = error instanceof ApiError ? error.fieldErrors : {};
      for (const name of ['delay_seconds', 'scheduled_at']) {
        if (errors[name]) errors.when = errors[name];
        delete errors[name];
      }
      if (!Object.keys(errors).length) errors[''] = error.message;
      showFieldErrors(form, errors, formError);
    } finally {
      submit.disabled = false;
    }
  });
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  command.focus();
}
