// Keeping a page fresh: a refresh repeated on a timer, stopped when the page is left.

import { isAbort } from './api.js';
import { setLiveState } from './components.js';

/**
 * Run `refresh` every `intervalMs` (a number, or a function read before each wait; the next
 * run is timed from the end of the last one, so a slow scheduler is never asked twice at
 * once) until `signal` aborts. Returns {now, pause, resume}; `now()` runs it at once,
 * `pause()` stops the timer until `resume()`. `label` (text or function) goes in the top bar.
 */
export function repeat(refresh, intervalMs, signal, { label } = {}) {
  let timer = null;
  let running = false;
  let paused = false;
  let again = false;

  const state = (text, kind) => {
    if (label !== undefined) setLiveState(typeof text === 'function' ? text() : text, kind);
  };
  const schedule = () => {
    clearTimeout(timer);
    const wait = typeof intervalMs === 'function' ? intervalMs() : intervalMs;
    if (!paused && !signal.aborted) timer = setTimeout(run, wait);
  };
  async function run() {
    if (signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await refresh();
      if (!paused) state(label, 'live');
    } catch (error) {
      if (!isAbort(error)) state(`${error.message} — retrying`, 'error');
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      run();
    } else schedule();
  }

  signal.addEventListener('abort', () => clearTimeout(timer));
  state(label, 'live');
  schedule();
  return {
    now: run,
    pause() {
      paused = true;
      clearTimeout(timer);
      state('paused', 'paused');
    },
    resume() {
      paused = false;
      run();
    },
    get paused() { return paused; },
  };
}
