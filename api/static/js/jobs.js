// The jobs the page knows, kept current by each active job's event stream.

import { getJob, listJobs } from "./api.js";
import { followJobEvents } from "./sse.js";

const ACTIVE = new Set(["queued", "running"]);
// A browser opens at most six HTTP/1.1 connections to one origin; each stream holds one, so a
// few are left for the page's other requests. Jobs past this wait for a free stream.
const MAX_STREAMS = 3;

export const isActive = (job) => ACTIVE.has(job.status);

export class JobStore {
  constructor() {
    this.jobs = new Map();
    this.order = []; // ids in the list, newest first
    this.listeners = new Set();
    this.streams = new Map(); // id → stop()
    this.lastEventIds = new Map();
    this.refreshing = new Map();
    this.pinned = null; // the job page's job is followed even when all streams are taken
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(id) {
    for (const listener of this.listeners) listener(id);
  }

  put(job) {
    this.jobs.set(job.id, job);
    this.emit(job.id);
    this.followActive();
  }

  async loadList() {
    const page = await listJobs(25);
    this.order = page.jobs.map((job) => job.id);
    for (const job of page.jobs) this.jobs.set(job.id, job);
    this.emit(null);
    this.followActive();
  }

  added(job) {
    this.order = [job.id, ...this.order.filter((id) => id !== job.id)];
    this.put(job);
    this.emit(null);
  }

  pin(id) {
    this.pinned = id;
    this.followActive();
  }

  followActive() {
    const wanted = [this.pinned, ...this.order].filter((id) => id && this.jobs.has(id));
    for (const id of wanted) {
      if (this.streams.has(id) || !isActive(this.jobs.get(id))) continue;
      if (this.streams.size >= MAX_STREAMS && id !== this.pinned) break;
      this.follow(id);
    }
  }

  follow(id) {
    const stop = followJobEvents(id, {
      lastEventId: this.lastEventIds.get(id) ?? 0,
      onEvent: (event) => this.applyEvent(event),
      onEnd: () => {
        this.streams.delete(id);
        this.refresh(id).finally(() => this.followActive());
      },
    });
    this.streams.set(id, stop);
  }

  // On sign-out: nothing of the previous key's jobs stays in the page.
  clear() {
    for (const stop of this.streams.values()) stop();
    this.streams.clear();
    this.jobs.clear();
    this.order = [];
    this.lastEventIds.clear();
    this.emit(null);
  }

  // A progress event is shown at once; every event also re-reads the job (one request at a
  // time per job), which brings what events do not carry: timings, errors, the result.
  applyEvent(event) {
    this.lastEventIds.set(event.job_id, event.id);
    const job = this.jobs.get(event.job_id);
    const stage = job?.stages.find((s) => s.name === event.stage);
    if (stage && event.type === "stage.progress") {
      stage.progress = event.data.progress;
      stage.status = "running";
      this.emit(job.id);
    }
    this.refresh(event.job_id);
  }

  refresh(id) {
    const pending = this.refreshing.get(id);
    if (pending) {
      pending.again = true;
      return pending.promise;
    }
    const entry = { again: true };
    entry.promise = (async () => {
      try {
        while (entry.again) {
          entry.again = false;
          const job = await getJob(id);
          this.jobs.set(id, job);
          this.emit(id);
        }
      } catch (error) {
        console.warn(`could not refresh job ${id}`, error);
      } finally {
        this.refreshing.delete(id);
      }
    })();
    this.refreshing.set(id, entry);
    return entry.promise;
  }
}
