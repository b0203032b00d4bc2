"""The "local" analysis backend: loudness, silences, black frames and scene cuts from one ffmpeg pass.

Deciding the command and reading its log are pure (tested on canned ffmpeg 5.1 output, which
ffmpeg 9 prints alike; the stage runs the configured static ffmpeg, 0.42 s against Debian 5.1's
0.55 s on a 30 s 1080p source and its 240p rendition here); only
`analyze_local` runs a process. The log is parsed as it streams, so a long file never costs
more memory than the figures themselves plus a short tail kept for error messages.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import AnalysisFailed, Canceled
from services.media.confine import KILL_GRACE_SECONDS, kill_group, spawn_confined
from services.media.probe import MediaInfo

SILENCE_NOISE = "-50dB"
SILENCE_MIN_SECONDS = 0.5
BLACK_MIN_SECONDS = 0.5
BLACK_PIXEL_THRESHOLD = 0.10
# scdet scores a frame 0-100 by how much it differs from the previous one; 10 is its own default
# and still catches a cut between two flat colours (red to blue scores about 15).
SCENE_THRESHOLD = 10.0
ANALYSIS_WIDTH = 320
STDERR_TAIL_LINES = 12
# How often the running analysis looks at the stop signal and its deadline.
STOP_POLL_SECONDS = 0.2

# A filter's log prefix is "[name @ 0x...]" or, for some filters, "[Parsed_name_N @ 0x...]".
_PREFIX = r"^\[(?:Parsed_)?{name}(?:_\d+)? @ [^\]]+\]\s*"
_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|-?inf|nan)"
_SILENCE_START = re.compile(_PREFIX.format(name="silencedetect") + r"silence_start:\s*" + _NUMBER)
_SILENCE_END = re.compile(_PREFIX.format(name="silencedetect") + r"silence_end:\s*" + _NUMBER)
_BLACK = re.compile(
    _PREFIX.format(name="blackdetect") + r"black_start:\s*" + _NUMBER + r"\s+black_end:\s*" + _NUMBER
)
_SCENE = re.compile(
    _PREFIX.format(name="scdet") + r"lavfi\.scd\.score:\s*" + _NUMBER + r",\s*lavfi\.scd\.time:\s*" + _NUMBER
)
_EBUR128_SUMMARY = re.compile(_PREFIX.format(name="ebur128") + r"Summary:")
# The summary's body is one multi-line log message, so only its first line carries the prefix.
_INTEGRATED = re.compile(r"^\s+I:\s+" + _NUMBER + r"\s+LUFS")
_RANGE = re.compile(r"^\s+LRA:\s+" + _NUMBER + r"\s+LU\s*$")
_PEAK = re.compile(r"^\s+Peak:\s+" + _NUMBER + r"\s+dBFS")


@dataclass
class AnalysisLog:
    """What one ffmpeg analysis pass reported, times in seconds from the start of the file."""

    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None
    silences: list[tuple[float, float]] = field(default_factory=list)
    black_segments: list[tuple[float, float]] = field(default_factory=list)
    scene_cuts: list[tuple[float, float]] = field(default_factory=list)  # (time, score 0-1)


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _read_summary_line(line: str, log: AnalysisLog) -> None:
    if match := _INTEGRATED.match(line):
        log.integrated_lufs = _finite(match[1])
    elif match := _RANGE.match(line):
        log.loudness_range_lu = _finite(match[1])
    elif match := _PEAK.match(line):
        log.true_peak_dbtp = _finite(match[1])


def parse_analysis_log(lines: Iterable[str], *, duration: float, frame_seconds: float = 0.0) -> AnalysisLog:
    """Read the figures out of ffmpeg's stderr, consuming `lines` once (they may be a live pipe).

    A silence still open at the end of the log, or one ffmpeg closes just past the end while
    flushing, ends at `duration`; so does a black segment whose last frame is the file's last.
    """
    log = AnalysisLog()
    silence_start: float | None = None
    in_summary = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        # The summary's body is indented; the next unindented line belongs to someone else.
        if in_summary and (not line or line[0].isspace()):
            _read_summary_line(line, log)
            continue
        in_summary = False
        if _EBUR128_SUMMARY.match(line):
            in_summary = True
        elif match := _SILENCE_START.match(line):
            silence_start = max(0.0, float(match[1]))
        elif match := _SILENCE_END.match(line):
            if silence_start is not None:
                log.silences.append((silence_start, min(float(match[1]), duration)))
            silence_start = None
        elif match := _BLACK.match(line):
            start, end = float(match[1]), float(match[2])
            if end + frame_seconds >= duration - 1e-3:
                end = duration
            log.black_segments.append((start, min(end, duration)))
        elif match := _SCENE.match(line):
            log.scene_cuts.append((float(match[2]), float(match[1]) / 100.0))
    if silence_start is not None and silence_start < duration:
        log.silences.append((silence_start, duration))
    return log


def build_analysis_command(
    source: Path, info: MediaInfo, *, ffmpeg: str, pictures: Path | None = None
) -> list[str]:
    """The one `ffmpeg` pass that measures everything the probe says the file holds.

    `pictures`, when given, is a smaller copy of the source's video (the lowest rendition's
    media playlist) to look for black frames and cuts in: both detectors work on a picture
    320 pixels wide, and decoding a 1080p source only to shrink it would cost more than
    the rest of the analysis. Sound is always measured on the source itself, so loudness
    and peaks are the uploaded file's, not an encoder's.
    """
    args = [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
        "-protocol_whitelist", "file",
        # The demuxer the probe accepted, never a fresh guess: a file that turned into a
        # playlist is not parsed as one. The file: prefix keeps a name starting with "-" or
        # holding ":" from being read as an option or a protocol.
        "-f", info.demuxer, "-i", f"file:{source.absolute()}",
    ]  # fmt: skip
    if info.has_video:
        video_input, retime = 0, []
        if pictures is not None:
            # Our own rendition: a playlist of segments beside it, in the same scratch folder.
            args += ["-f", "hls", "-i", f"file:{pictures.absolute()}"]
            # A rendition starts where its AAC priming starts, a frame or so before its first
            # picture; counting from the first picture puts times back on the source's clock.
            video_input, retime = 1, ["setpts=PTS-STARTPTS"]
        # Capital V skips attached cover pictures, as the probe does. Detection runs on a small
        # picture: black frames and cuts survive downscaling and decoding dominates the cost anyway.
        video_filters = ",".join(
            [
                *retime,
                f"scale=w='min({ANALYSIS_WIDTH},iw)':h=-2",
                f"blackdetect=d={BLACK_MIN_SECONDS}:pix_th={BLACK_PIXEL_THRESHOLD:.2f}",
                f"scdet=threshold={SCENE_THRESHOLD:g}",
            ]
        )
        args += ["-map", f"{video_input}:V:0", "-vf", video_filters]
    if info.has_audio:
        # framelog=verbose moves ebur128's per-frame lines below our log level; only its
        # summary is printed.
        audio_filters = ",".join(
            [
                "ebur128=peak=true:framelog=verbose",
                f"silencedetect=noise={SILENCE_NOISE}:d={SILENCE_MIN_SECONDS}",
            ]
        )
        args += ["-map", "0:a:0", "-af", audio_filters]
    return [*args, "-f", "null", "-"]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summarize(result: dict[str, Any]) -> str:
    """One line a person can read in a job list."""
    parts = [f"{result['duration']:.1f} s"]
    codecs = "/".join(c for c in (result["video_codec"], result["audio_codec"]) if c)
    if result["has_video"]:
        parts.append(f"{result['width']}x{result['height']} {result['fps']:g} fps {codecs}")
    else:
        parts.append(codecs)
    figures = []
    loudness = result["loudness"]
    if loudness is None:
        figures.append("no audio")
    elif loudness["integrated_lufs"] is not None:
        figures.append(f"{loudness['integrated_lufs']:.1f} LUFS")
    if result["has_video"]:
        figures.append(_plural(len(result["scene_cuts"]), "scene cut"))
    if result["has_audio"]:
        figures.append(_plural(len(result["silences"]), "silence"))
    if result["has_video"]:
        figures.append(_plural(len(result["black_segments"]), "black segment"))
    return " ".join(parts) + ", " + ", ".join(figures)


def build_result(info: MediaInfo, log: AnalysisLog) -> dict[str, Any]:
    """The stored analysis: stream facts from the probe, everything else measured."""

    def segment(start: float, end: float) -> dict[str, float]:
        return {"start": round(start, 3), "end": round(end, 3), "duration": round(end - start, 3)}

    video, audio = info.video, info.audio
    result: dict[str, Any] = {
        "backend": "local",
        "duration": round(info.duration, 3),
        "width": video.width if video else None,
        "height": video.height if video else None,
        "fps": video.fps if video else None,
        "bit_rate": info.bit_rate,
        "size_bytes": info.size_bytes,
        "format": info.format_name,
        "video_codec": video.codec if video else None,
        "audio_codec": audio.codec if audio else None,
        "has_audio": audio is not None,
        "has_video": video is not None,
        "loudness": None,
        # The command only runs a stream's filters when the probe saw that stream, so a missing
        # stream leaves its lists empty.
        "silences": [segment(s, e) for s, e in log.silences],
        "scene_cuts": [{"time": round(t, 3), "score": round(s, 3)} for t, s in log.scene_cuts],
        "black_segments": [segment(s, e) for s, e in log.black_segments],
    }
    if audio is not None:
        result["loudness"] = {
            "integrated_lufs": log.integrated_lufs,
            "loudness_range_lu": log.loudness_range_lu,
            "true_peak_dbtp": log.true_peak_dbtp,
        }
    result["summary"] = summarize(result)
    return result


def _remembering(lines: Iterable[str], tail: deque[str]) -> Iterator[str]:
    for line in lines:
        if line.strip():
            tail.append(line.rstrip())
        yield line


def analyze_local(
    source: Path,
    info: MediaInfo,
    *,
    pictures: Path | None = None,
    timeout: float = 600.0,
    should_stop: Callable[[], bool] = lambda: False,
    ffmpeg: str,
    memory_limit_bytes: int | None = None,
) -> dict[str, Any]:
    """Measure `source` (its video on `pictures` when given, see build_analysis_command) with
    `ffmpeg`, confined as every media child is; `analysis_failed` if it cannot be read,
    `timeout` if too slow, `canceled` if the stage is told to stop."""
    args = build_analysis_command(source, info, pictures=pictures, ffmpeg=ffmpeg)
    try:
        process = spawn_confined(
            args, memory_limit_bytes=memory_limit_bytes, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise AnalysisFailed(f"ffmpeg could not be started ({exc}).") from exc
    ended_by: list[str] = []

    def watch() -> None:
        # Killing the group closes ffmpeg's stderr, which ends the parsing loop below.
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            for reason, reached in (("stop", should_stop()), ("timeout", time.monotonic() >= deadline)):
                if reached:
                    ended_by.append(reason)
                    kill_group(process)
                    return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, min(STOP_POLL_SECONDS, deadline - time.monotonic())))

    watcher = threading.Thread(target=watch, name="analysis-watch", daemon=True)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    frame_seconds = 1.0 / info.video.fps if info.video and info.video.fps > 0 else 0.0
    watcher.start()
    try:
        assert process.stderr is not None
        log = parse_analysis_log(
            _remembering(process.stderr, tail), duration=info.duration, frame_seconds=frame_seconds
        )
        returncode = process.wait()
    finally:
        kill_group(process)
        watcher.join(timeout=KILL_GRACE_SECONDS)
        if process.stderr is not None:
            process.stderr.close()
    if "stop" in ended_by:
        raise Canceled("The analysis was stopped.")
    if "timeout" in ended_by:
        raise AnalysisFailed(f"Analysis took longer than {timeout:g} s.", code="timeout")
    if returncode != 0:
        reason = " | ".join(tail) or f"exit status {returncode}"
        # A kill we did not send (the OOM killer) says nothing about the file: try again.
        raise AnalysisFailed(f"ffmpeg could not analyze the file: {reason}", transient=returncode < 0)
    return build_result(info, log)
