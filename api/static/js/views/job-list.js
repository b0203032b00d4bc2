// The jobs list: status, stage and progress of each job, live while its events stream.

import { el } from "../dom.js";
import { sourceName, when } from "../format.js";

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

function jobRow(job) {
  const percent = Math.round(job.progress ?? 0);
  return el(
    "li",
    { class: "job-row", dataset: { jobId: job.id, status: job.status } },
    el(
      "a",
      { href: `/jobs/${job.id}`, "data-link": true },
      el("span", { class: "job-name" }, sourceName(job)),
      el("span", { class: "job-meta" }, when(job.created_at)),
      el(
        "span",
        { class: "job-state" },
        statusBadge(job.status),
        job.stage && job.status !== "succeeded" ? el("span", { class: "job-stage" }, job.stage) : null,
      ),
      el(
        "span",
        { class: "job-progress" },
        el("progress", { max: 100, value: percent }),
        el("span", { class: "percent" }, `${percent}%`),
      ),
    ),
  );
}

export function renderJobList(list, empty, store) {
  const jobs = store.order.map((id) => store.jobs.get(id)).filter(Boolean);
  list.replaceChildren(...jobs.map(jobRow));
  empty.hidden = jobs.length > 0;
}
