// One job: its state, the stage timeline, retry / cancel, the player and the analysis.

import { cancelJob, getJob, retryJob } from "../api.js";
import { clear, el } from "../dom.js";
import { bitrate, bytes, quality, sourceName, when } from "../format.js";
import { Player } from "../player.js";
import { renderAnalysis } from "./analysis.js";
import { statusBadge } from "./job-list.js";
import { renderTimeline } from "./timeline.js";

// Every rendition with its size, rate and how good it looks against the source; then the sound
// and subtitle tracks.
function renderRenditions(result) {
  const pictures = result.renditions.map((r) =>
    el(
      "li",
      { dataset: { rendition: r.name } },
      el("strong", {}, r.name),
      r.width ? ` ${r.width}x${r.height} · ${r.fps} fps` : null,
      ` · ${bitrate(r.bandwidth)} · `,
      el("span", { class: "quality" }, quality(r.quality)),
    ),
  );
  const tracks = [
    ...(result.audio ?? []).map((a) => `Sound: ${a.title}${a.language ? ` (${a.language})` : ""}${a.default ? ", default" : ""}`),
    ...(result.subtitles ?? []).map((s) => `Subtitles: ${s.title}${s.language ? ` (${s.language})` : ""}`),
  ];
  return el(
    "div",
    { class: "renditions-card" },
    el("h3", {}, "Renditions"),
    el("ul", { class: "renditions" }, pictures),
    tracks.length ? el("ul", { class: "tracks muted" }, tracks.map((line) => el("li", {}, line))) : null,
  );
}

export class JobPage {
  constructor(root, store, jobId) {
    this.root = root;
    this.store = store;
    this.jobId = jobId;
    this.player = null;
    this.header = el("div", { class: "job-head" });
    this.actionError = el("p", { class: "error", role: "alert", hidden: true });
    this.playerSlot = el("section", { class: "card player-card" });
    this.timeline = el("section", { class: "card" });
    this.analysis = el("section", { class: "card analysis-card" });
    clear(
      root,
      el("a", { href: "/", "data-link": true, class: "back" }, "← All jobs"),
      this.header,
      this.actionError,
      el("div", { class: "job-grid" }, el("div", { class: "job-main" }, this.playerSlot, this.analysis), this.timeline),
    );
    this.unsubscribe = store.subscribe((id) => (id === null || id === jobId) && this.render());
    store.pin(jobId);
    this.render();
    this.load();
  }

  async load() {
    try {
      this.store.put(await getJob(this.jobId));
    } catch (failure) {
      clear(this.header, el("h1", {}, "Job not found"), el("p", { class: "error" }, failure.message));
    }
  }

  get job() {
    return this.store.jobs.get(this.jobId);
  }

  async act(action) {
    this.actionError.hidden = true;
    try {
      this.store.put(await action(this.jobId));
    } catch (failure) {
      this.actionError.textContent = `${failure.code}: ${failure.message}`;
      this.actionError.hidden = false;
    }
  }

  render() {
    const job = this.job;
    if (!job) return;
    document.title = `${sourceName(job)} · Conveyor`;
    const upload = job.source?.upload;
    clear(
      this.header,
      el(
        "div",
        { class: "job-title" },
        el("h1", {}, sourceName(job)),
        el("span", { id: "job-status" }, statusBadge(job.status)),
        job.status === "running" || job.status === "queued"
          ? el("span", { class: "muted" }, `${job.stage ?? ""} · ${Math.round(job.progress)}%`)
          : null,
      ),
      el(
        "p",
        { class: "muted job-ids" },
        el("code", {}, job.id),
        ` · created ${when(job.created_at)}`,
        upload?.bytes ? ` · ${bytes(upload.bytes)}` : null,
        job.finished_at ? ` · finished ${when(job.finished_at)}` : null,
      ),
      job.error ? el("p", { class: "error" }, el("code", {}, job.error.code), " ", job.error.message) : null,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", id: "retry", disabled: job.status !== "failed", onclick: () => this.act(retryJob) }, "Retry"),
        el(
          "button",
          { type: "button", id: "cancel", class: "danger", disabled: !["queued", "running"].includes(job.status), onclick: () => this.act(cancelJob) },
          "Cancel",
        ),
      ),
    );
    clear(this.timeline, el("h2", {}, "Stages"), renderTimeline(job));
    this.renderResult(job);
  }

  renderResult(job) {
    const result = job.result;
    if (!result?.playback_url) {
      this.player?.destroy();
      this.player = null;
      const note = job.status === "succeeded" ? "This job has no playable output." : "The player appears when the job has succeeded.";
      clear(this.playerSlot, el("h2", {}, "Playback"), el("p", { class: "muted" }, note));
      clear(this.analysis, el("h2", {}, "Analysis"), renderAnalysis(null));
      return;
    }
    if (!this.player) {
      this.player = new Player(result);
      clear(this.playerSlot, this.player.root, renderRenditions(result));
      clear(this.analysis, el("h2", {}, "Analysis"), renderAnalysis(result.analysis, (t) => this.player.seekTo(t)));
    }
  }

  close() {
    this.unsubscribe();
    this.player?.destroy();
    this.store.pin(null);
  }
}
