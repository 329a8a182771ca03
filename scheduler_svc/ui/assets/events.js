// GET /events read with fetch (EventSource cannot send the API token): Server-Sent Events
// parsed as they arrive, each message a JSON array of events; after a dropped connection the
// stream is resumed with Last-Event-ID, so nothing in between is missed.

import { send } from './api.js';

const RETRY_MS = 1000;

/** Split SSE text into messages ({event, id, data}); returns the unfinished rest. */
function parseMessages(buffer, onMessage) {
  const blocks = buffer.split(/\r?\n\r?\n/);
  const rest = blocks.pop();
  for (const block of blocks) {
    const message = { event: 'message', id: null, data: [] };
    for (const line of block.split(/\r?\n/)) {
      const colon = line.indexOf(':');
      if (colon === 0) continue; // a comment (the server's keep-alive)
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') message.data.push(value);
      else if (field === 'event') message.event = value;
      else if (field === 'id') message.id = value;
    }
    if (message.data.length) onMessage({ ...message, data: message.data.join('\n') });
  }
  return rest;
}

/**
 * Follow /events with `query` (kind, task_id, schedule_id) until `signal` aborts: `onEvents`
 * gets each batch (an array of events), `onState` 'live' or an error message while reconnecting.
 */
export async function followEvents(query, signal, { onEvents, onState = () => {} }) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const response = await send('GET', 'events', {
        query, signal, headers: { Accept: 'text/event-stream', ...(lastId ? { 'Last-Event-ID': lastId } : {}) },
      });
      onState('live');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseMessages(buffer + value, (message) => {
          if (message.id) lastId = message.id;
          if (message.event === 'events') onEvents(JSON.parse(message.data));
        });
      }
    } catch (error) {
      if (signal.aborted || error.name === 'AbortError') return;
      onState(error.message);
    }
    await new Promise((resolve) => { setTimeout(resolve, RETRY_MS); });
  }
}
