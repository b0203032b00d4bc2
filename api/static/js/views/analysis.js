// The analysis as people read it: local (ffmpeg measurements) or Gemini (summary, moments,
// transcript, flags). Times are buttons that seek the player.

import { el } from "../dom.js";
import { bitrate, bytes, clock, duration, number } from "../format.js";

function facts(pairs) {
  return el(
    "dl",
    { class: "facts" },
    pairs.filter(([, value]) => value !== null && value !== undefined).flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]),
  );
}

function timeButton(seconds, seek) {
  return el("button", { type: "button", class: "time", onclick: () => seek(seconds), title: "Play from here" }, clock(seconds));
}

function segmentList(title, segments, seek, empty) {
  return el(
    "section",
    { class: "analysis-list" },
    el("h4", {}, `${title} (${segments.length})`),
    segments.length
      ? el(
          "ul",
          {},
          segments.map((s) => el("li", {}, timeButton(s.start, seek), ` – ${clock(s.end)}`, el("span", { class: "muted" }, ` ${duration(s.duration)}`))),
        )
      : el("p", { class: "muted" }, empty),
  );
}

function localAnalysis(a, seek) {
  const loudness = a.loudness;
  return [
    a.summary ? el("p", { class: "summary" }, a.summary) : null,
    facts([
      ["Duration", duration(a.duration)],
      ["Picture", a.width ? `${a.width}×${a.height}` : "none (audio only)"],
      ["Frame rate", a.fps ? `${number(a.fps, 2)} fps` : null],
      ["Codecs", [a.video_codec, a.audio_codec].filter(Boolean).join(" + ") || null],
      ["Bit rate", a.bit_rate ? bitrate(a.bit_rate) : null],
      ["Size", a.size_bytes ? bytes(a.size_bytes) : null],
    ]),
    el("h4", {}, "Loudness (EBU R128)"),
    loudness
      ? facts([
          ["Integrated", number(loudness.integrated_lufs, 1, "LUFS")],
          ["Range", number(loudness.loudness_range_lu, 1, "LU")],
          ["True peak", number(loudness.true_peak_dbtp, 1, "dBTP")],
        ])
      : el("p", { class: "muted" }, "No audio."),
    el(
      "section",
      { class: "analysis-list" },
      el("h4", {}, `Scene cuts (${a.scene_cuts?.length ?? 0})`),
      a.scene_cuts?.length
        ? el("ul", { class: "inline" }, a.scene_cuts.map((cut) => el("li", {}, timeButton(cut.time, seek))))
        : el("p", { class: "muted" }, "No scene cuts."),
    ),
    segmentList("Silences", a.silences ?? [], seek, "No silences."),
    segmentList("Black segments", a.black_segments ?? [], seek, "No black segments."),
  ];
}

function geminiAnalysis(a, seek) {
  return [
    a.summary ? el("p", { class: "summary" }, a.summary) : null,
    facts([
      ["Model", a.model],
      ["Language", a.language_name ? `${a.language_name} (${a.language})` : a.language],
    ]),
    el("h4", {}, "Flags"),
    a.flags?.length
      ? el("ul", { class: "flags" }, a.flags.map((flag) => el("li", { class: "flag" }, flag)))
      : el("p", { class: "muted" }, "Nothing flagged."),
    el("h4", {}, "Key moments"),
    a.key_moments?.length
      ? el("ul", { class: "moments" }, a.key_moments.map((m) => el("li", {}, timeButton(m.time, seek), " ", m.description)))
      : el("p", { class: "muted" }, "None."),
    el("h4", {}, "Transcript"),
    a.transcript?.length
      ? el("ol", { class: "transcript" }, a.transcript.map((s) => el("li", {}, timeButton(s.start, seek), " ", s.text)))
      : el("p", { class: "muted" }, "No speech."),
  ];
}

export function renderAnalysis(analysis, seek) {
  if (!analysis) return el("p", { class: "muted" }, "No analysis yet.");
  const body = analysis.backend === "gemini" ? geminiAnalysis(analysis, seek) : localAnalysis(analysis, seek);
  return el("div", { class: "analysis" }, el("p", { class: "muted" }, `Backend: ${analysis.backend}`), body);
}
