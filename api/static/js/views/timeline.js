// The five stages as a timeline: status, attempts, how long each took, progress and errors.

import { el } from "../dom.js";
import { between, duration, when } from "../format.js";

const MARKS = { succeeded: "✓", failed: "✕", canceled: "–", running: "●", skipped: "↷" };

function stageItem(stage) {
  const seconds = between(stage.started_at, stage.finished_at);
  const running = stage.status === "running";
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
      stage.error
        ? el("p", { class: "stage-error" }, el("code", {}, stage.error.code), " ", stage.error.message)
        : null,
    ),
  );
}

export function renderTimeline(job) {
  return el("ol", { class: "timeline" }, job.stages.map(stageItem));
}
