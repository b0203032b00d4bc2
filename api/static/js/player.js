// The player: hls.js on the master playlist, with a rendition switcher that says how good each
// rendition looks, a sound track switcher, subtitles (the source's and generated captions), and
// a seek bar that previews the storyboard thumbnail under the pointer.

import Hls from "/vendor/hls.js/hls.min.mjs";
import { el } from "./dom.js";
import { clock, quality } from "./format.js";
import { cueAt, loadStoryboard } from "./storyboard.js";

// The result's rendition whose playlist a level plays (levels hls.js cannot decode are left
// out of hls.levels, so the two lists are matched by URL, not by position).
function renditionOf(level, renditions) {
  const path = (url) => new URL(url, window.location.href).pathname;
  const played = path(level.url);
  return renditions.find((rendition) => rendition.url && path(rendition.url) === played);
}

function levelLabel(level, rendition) {
  const kbps = Math.round(level.bitrate / 1000);
  const size = level.height ? `${level.height}p · ` : "";
  const codec = rendition?.codec && rendition.codec !== "h264" ? `${rendition.codec.toUpperCase()} · ` : "";
  const score = rendition?.quality ? ` · ${quality(rendition.quality)}` : "";
  return `${size}${codec}${kbps} kb/s${score}`;
}

export class Player {
  constructor(result) {
    this.result = result;
    this.storyboard = null;
    this.video = el("video", { playsinline: true, preload: "metadata", poster: result.poster_url ?? null });
    this.playButton = el("button", { type: "button", class: "play", onclick: () => this.toggle() }, "Play");
    this.seek = el("input", { type: "range", class: "seek", min: 0, max: 0, step: "any", value: 0, "aria-label": "Seek" });
    this.thumb = el("div", { class: "thumb" });
    this.previewTime = el("span", { class: "preview-time" });
    this.preview = el("div", { class: "preview", hidden: true }, this.thumb, this.previewTime);
    this.clock = el("span", { class: "clock" }, "0:00 / 0:00");
    this.quality = el("select", { class: "quality", "aria-label": "Quality" }, el("option", { value: "-1" }, "Auto"));
    this.captions = el("select", { class: "captions", "aria-label": "Subtitles" }, el("option", { value: "-1" }, "Off"));
    this.sound = el("select", { class: "sound", "aria-label": "Sound" });
    this.muteButton = el("button", { type: "button", class: "quiet", onclick: () => this.toggleMute() }, "Mute");
    this.error = el("p", { class: "error", hidden: true, role: "alert" });
    const hasCaptions = (result.captions ?? []).length + (result.subtitles ?? []).length > 0;
    const hasSoundChoice = (result.audio ?? []).length > 1;
    this.root = el(
      "figure",
      { class: "player" },
      el("div", { class: "screen" }, this.video),
      el(
        "div",
        { class: "controls" },
        this.playButton,
        el("div", { class: "seek-wrap" }, this.preview, this.seek),
        this.clock,
        el("label", { class: "control" }, "Quality ", this.quality),
        hasSoundChoice ? el("label", { class: "control" }, "Sound ", this.sound) : null,
        hasCaptions ? el("label", { class: "control" }, "Subtitles ", this.captions) : null,
        this.muteButton,
        el("button", { type: "button", class: "quiet", onclick: () => this.root.requestFullscreen?.() }, "Full screen"),
      ),
      this.error,
    );
    this.wireVideo();
    this.wireSeekPreview();
    this.start();
  }

  start() {
    if (!Hls.isSupported()) {
      // Safari plays HLS natively (no level switching from script there).
      this.video.src = this.result.playback_url;
      return;
    }
    const hls = new Hls({ workerPath: "/vendor/hls.js/hls.worker.js" });
    this.hls = hls;
    window.conveyorPlayer = hls; // for tests and for a curious operator's console
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.fillLevels());
    hls.on(Hls.Events.LEVEL_SWITCHED, () => this.showLevel());
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => this.fillCaptions());
    hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, () => this.fillSound());
    hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, () => {
      this.sound.value = String(hls.audioTrack);
    });
    // hls.js turns on the playlist's DEFAULT track by itself: the switcher shows what is on.
    hls.on(Hls.Events.SUBTITLE_TRACK_SWITCH, () => {
      this.captions.value = String(hls.subtitleDisplay ? hls.subtitleTrack : -1);
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) this.fail(`Playback failed: ${data.details}`);
    });
    this.quality.addEventListener("change", () => {
      hls.currentLevel = Number(this.quality.value); // -1: automatic
    });
    this.sound.addEventListener("change", () => {
      hls.audioTrack = Number(this.sound.value);
    });
    this.captions.addEventListener("change", () => {
      const track = Number(this.captions.value);
      hls.subtitleDisplay = track >= 0;
      hls.subtitleTrack = track;
    });
    hls.loadSource(this.result.playback_url);
    hls.attachMedia(this.video);
    loadStoryboard(this.result.storyboard)
      .then((storyboard) => {
        this.storyboard = storyboard;
        this.root.dataset.storyboard = storyboard?.length ? "ready" : "none";
      })
      .catch((error) => console.warn("no storyboard previews", error));
  }

  fillLevels() {
    const renditions = this.result.renditions ?? [];
    const options = this.hls.levels.map((level, index) => ({ level, index })).sort((a, b) => b.level.height - a.level.height);
    this.quality.replaceChildren(
      el("option", { value: "-1" }, "Auto"),
      ...options.map(({ level, index }) => el("option", { value: String(index) }, levelLabel(level, renditionOf(level, renditions)))),
    );
  }

  fillSound() {
    this.sound.replaceChildren(
      ...this.hls.audioTracks.map((track, index) => el("option", { value: String(index) }, track.name || track.lang || `Sound ${index + 1}`)),
    );
    this.sound.value = String(this.hls.audioTrack);
  }

  showLevel() {
    const level = this.hls.levels[this.hls.currentLevel];
    const auto = this.quality.options[0];
    auto.textContent = this.hls.autoLevelEnabled && level?.height ? `Auto (${level.height}p)` : "Auto";
  }

  fillCaptions() {
    this.captions.replaceChildren(
      el("option", { value: "-1" }, "Off"),
      ...this.hls.subtitleTracks.map((track, index) => el("option", { value: String(index) }, track.name || track.lang || `Track ${index + 1}`)),
    );
  }

  wireVideo() {
    const v = this.video;
    const update = () => {
      this.clock.textContent = `${clock(v.currentTime)} / ${clock(v.duration)}`;
      if (!this.seeking) this.seek.value = String(v.currentTime);
    };
    v.addEventListener("loadedmetadata", () => {
      this.seek.max = String(v.duration);
      update();
    });
    v.addEventListener("durationchange", () => {
      this.seek.max = String(v.duration || 0);
    });
    v.addEventListener("timeupdate", update);
    v.addEventListener("play", () => (this.playButton.textContent = "Pause"));
    v.addEventListener("pause", () => (this.playButton.textContent = "Play"));
    v.addEventListener("volumechange", () => (this.muteButton.textContent = v.muted ? "Unmute" : "Mute"));
    v.addEventListener("click", () => this.toggle());
  }

  wireSeekPreview() {
    const timeAtPointer = (event) => {
      const box = this.seek.getBoundingClientRect();
      const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      return { time: fraction * (Number(this.seek.max) || 0), fraction };
    };
    this.seek.addEventListener("pointermove", (event) => {
      const { time, fraction } = timeAtPointer(event);
      this.showPreview(time, fraction);
    });
    this.seek.addEventListener("pointerleave", () => {
      if (!this.seeking) this.preview.hidden = true;
    });
    this.seek.addEventListener("input", () => {
      this.seeking = true;
      const max = Number(this.seek.max) || 1;
      this.showPreview(Number(this.seek.value), Number(this.seek.value) / max);
    });
    this.seek.addEventListener("change", () => {
      this.seeking = false;
      this.video.currentTime = Number(this.seek.value);
      this.preview.hidden = true;
    });
  }

  showPreview(time, fraction) {
    this.previewTime.textContent = clock(time);
    const cue = this.storyboard && cueAt(this.storyboard, time);
    this.thumb.hidden = !cue;
    if (cue) {
      Object.assign(this.thumb.style, {
        width: `${cue.w}px`,
        height: `${cue.h}px`,
        backgroundImage: `url("${cue.image.replaceAll('"', "%22")}")`,
        backgroundPosition: `-${cue.x}px -${cue.y}px`,
      });
    }
    this.preview.style.left = `${fraction * 100}%`;
    this.preview.hidden = false;
  }

  toggle() {
    if (this.video.paused) this.video.play().catch((error) => this.fail(`Cannot play: ${error.message}`));
    else this.video.pause();
  }

  toggleMute() {
    this.video.muted = !this.video.muted;
  }

  seekTo(seconds) {
    this.video.currentTime = seconds;
    this.video.play().catch(() => {});
  }

  fail(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  destroy() {
    this.hls?.destroy();
    if (window.conveyorPlayer === this.hls) window.conveyorPlayer = undefined;
  }
}
