// The five stages as a timeline: status, attempts, how long each took, progress and errors;
// under the transcode, its parts, each with the video host that ran it.

import { el } from "../dom.js";
import { between, duration, when } from "../format.js";

const MARKS = { succeeded: "✓", failed: "✕", canceled: "–", running: "●", waiting: "●", skipped: "↷" };

function seconds(value) {
  return `${Math.round(value)} s`;
}

function partItem(part) {
  const took = between(part.started_at, part.finished_at);
  const span = part.kind === "sound" ? "sound" : `${seconds(part.start_seconds)}–${part.end_seconds === null ? "end" : seconds(part.end_seconds)}`;
  return el(
    "li",
    { class: `part part-${part.status}`, dataset: { part: String(part.index) }, title: `${part.status}, attempt ${part.attempts}` },
    el("span", { class: "part-span" }, span),
    el("progress", { max: 100, value: part.status === "succeeded" ? 100 : part.progress ?? 0 }),
    el("span", { class: "part-worker muted" }, part.worker ?? part.status),
    el("span", { class: "stage-duration" }, took === null ? "" : duration(took)),
  );
}

function partList(stage) {
  const parts = stage.parts ?? [];
  return parts.length > 1 ? el("ol", { class: "parts" }, parts.map(partItem)) : null;
}

function stageItem(stage) {
  const seconds = between(stage.started_at, stage.finished_at);
  const running = stage.status === "running" || stage.status === "waiting";
  return el(
    "li",
    { class: `stage stage-${stage.status}`, dataset: { stage: stage.name } },
    el("span", { class: "stage-mark", "aria-hidden": "true" }, MARKS[stage.status] ?? "○"),
    el(
      "div",
      { class: "stage-body" },
      el(
        "div",
        { class: "stage-line" },
        el("strong", {}, stage.name),
        el("span", { class: "stage-status" }, stage.status),
        stage.attempts > 1 ? el("span", { class: "muted" }, `attempt ${stage.attempts}`) : null,
        el(
          "span",
          { class: "stage-duration", title: stage.started_at ? `started ${when(stage.started_at)}` : null },
          seconds === null ? "" : `${duration(seconds)}${running ? "…" : ""}`,
        ),
      ),
      running ? el("progress", { max: 100, value: stage.progress ?? 0 }) : null,
      partList(stage),
      stage.error
        ? el("p", { class: "stage-error" }, el("code", {}, stage.error.code), " ", stage.error.message)
        : null,
    ),
  );
}

export function renderTimeline(job) {
  return el("ol", { class: "timeline" }, job.stages.map(stageItem));
}
