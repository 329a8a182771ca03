// An attempt's output on the task page: read whole once the attempt has ended, followed live
// (GET /tasks/{id}/output?follow=true, a streamed response) while it runs. Shown as text.

import { send } from './api.js';
import { errorBox } from './components.js';
import { countText, h, replace, visibleText } from './dom.js';

/** The panel and an `update(task)` to call whenever the task is reloaded. */
export function outputPanel(taskId, pageSignal) {
  const pre = h('pre', { class: 'output-block', tabindex: '0', 'aria-label': 'Output', id: 'task-output' });
  const info = h('div', { class: 'muted small output-info', 'aria-live': 'polite' });
  const picker = h('div', { class: 'output-picker' });
  const element = h('div', {}, picker, pre, info);
  let shown = null; // {attempt, live, controller}

  async function read(attempt, live) {
    shown?.controller.abort();
    const controller = new AbortController();
    pageSignal.addEventListener('abort', () => controller.abort(), { once: true });
    shown = { attempt, live, controller };
    pre.replaceChildren();
    replace(info, live ? 'following while it runs…' : 'loading…');
    try {
      const response = await send('GET', `tasks/${taskId}/output`, {
        query: { attempt, follow: live ? 'true' : undefined },
        signal: controller.signal,
        headers: { Accept: 'text/plain' },
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let bytes = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(visibleText(value));
        bytes += new TextEncoder().encode(value).length;
        if (atBottom) pre.scrollTop = pre.scrollHeight;
        if (live) replace(info, `following while it runs… ${countText(bytes)} bytes`);
      }
      const omitted = Number(response.headers.get('X-Skiplock-Output-Omitted') ?? 0);
      replace(info, `attempt ${attempt} · ${pre.textContent ? 'complete' : 'no output'}`
        + (omitted > 0 ? ` · ${countText(omitted)} bytes left out in the middle` : ''));
      if (live) shown.live = false;
    } catch (error) {
      if (error.name === 'AbortError') return;
      replace(info, errorBox(error));
    }
  }

  function showPicker(task) {
    if (task.attempts.length < 2) { picker.replaceChildren(); return; }
    const select = h('select', { 'aria-label': 'Attempt' }, [...task.attempts].reverse().map((a) =>
      h('option', { value: a.attempt, selected: a.attempt === shown?.attempt }, `attempt ${a.attempt} · ${a.status}`)));
    select.addEventListener('change', () => {
      picked = true;
      const chosen = task.attempts.find((a) => a.attempt === Number(select.value));
      read(chosen.attempt, !chosen.ended_at);
    });
    replace(picker, select);
  }

  let picked = false; // once an attempt is chosen by hand, a new attempt does not replace it

  function update(task) {
    const latest = task.attempts[task.attempts.length - 1];
    if (!latest) {
      replace(info, 'No output yet: the task has not been handed to a worker.');
      return;
    }
    if (!picked && shown?.attempt !== latest.attempt) read(latest.attempt, !latest.ended_at);
    showPicker(task);
  }

  return { element, update };
}
