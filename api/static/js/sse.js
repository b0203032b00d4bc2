// Server-Sent Events over fetch(): EventSource cannot send an Authorization header.

import { authHeaders, getJob } from "./api.js";

const ENDED = new Set(["job.succeeded", "job.failed", "job.canceled"]);
const ENDED_STATUSES = new Set(["succeeded", "failed", "canceled"]);

// Splits a text stream into SSE messages ({id, event, data}) per the spec's line rules.
export class EventStreamParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.fields = { data: [] };
    this.retry = null;
  }

  push(text) {
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop(); // the last piece may be half a line
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      const { id, event, data } = this.fields;
      if (data.length) this.onMessage({ id, event: event ?? "message", data: data.join("\n") });
      this.fields = { data: [] };
      return;
    }
    if (line.startsWith(":")) return; // a comment: keepalive
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.fields.data.push(value);
    else if (name === "id") this.fields.id = value;
    else if (name === "event") this.fields.event = value;
    else if (name === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/*
 * Follows a job's events until the server ends the stream after a terminal event (a retried
 * job's stream carries job.failed and then goes on): onEvent gets each event's parsed data.
 * A dropped or closed stream is reopened with Last-Event-ID after the server's retry delay,
 * so no event is missed or seen twice. Returns a function that stops following.
 */
export function followJobEvents(jobId, { onEvent, lastEventId = 0, onEnd = () => {} }) {
  const controller = new AbortController();
  let lastId = lastEventId;
  let retryMs = 2000;
  let ended = false;
  let lastType = null;

  async function readOnce() {
    const headers = authHeaders();
    if (lastId) headers["Last-Event-ID"] = String(lastId);
    const response = await fetch(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`, {
      headers,
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw Object.assign(new Error(`events: HTTP ${response.status}`), { status: response.status });
    const parser = new EventStreamParser((message) => {
      if (message.id) lastId = Number(message.id);
      const event = JSON.parse(message.data);
      lastType = message.event;
      onEvent(event);
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
      if (parser.retry !== null) retryMs = parser.retry;
    }
    // The server closes a stream once the job has ended, or after a while (then: reconnect).
    // A stream resumed after the terminal event carries nothing: the job's status tells.
    ended = ENDED.has(lastType) || ENDED_STATUSES.has((await getJob(jobId, controller.signal)).status);
  }

  (async () => {
    while (!ended && !controller.signal.aborted) {
      try {
        await readOnce();
      } catch (error) {
        if (controller.signal.aborted) return;
        // 401/404 will not get better by retrying.
        if (error.status === 401 || error.status === 404) break;
      }
      if (!ended) await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
    if (!controller.signal.aborted) onEnd({ lastEventId: lastId, ended });
  })();

  return () => controller.abort();
}
