"""Quality receipts: how close each rendition looks to the source, measured on a sample.

VMAF (libvmaf, model vmaf_v0.6.1, embedded in the static ffmpeg) where the binary has it, else
PSNR and SSIM. The sample is a few short windows spread over the video, decoded once each
from the source (through the same deinterlacing and tone mapping as the renditions, so an
HDR source is judged against what an SDR screen should show) and from every rendition; each
rendition is scaled up to the top rendition's size, as a viewer's player would show it.
A transcode in parts measures, in each part, the windows that fall in it (`windows_within`),
and the stitch pools the parts' per-frame scores into one receipt (`merged_receipts`): the
sample spans the whole video, as for a source transcoded whole, and its cost is spread over
the parts. Planning, the command, reading the logs and pooling are pure; ``measure_scores``
runs it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import ffmpeg as ffmpeg_python

from services.media.ffmpeg import run_ffmpeg, split_stream
from services.media.ladder import Rendition
from services.media.pictures import PicturePlan, picture_steps, scale_step, tagged_bt709
from services.media.playlists import MEDIA_PLAYLIST, MediaPlaylist, init_section, parse_media_playlist
from services.media.probe import MediaInfo

Metric = Literal["vmaf", "psnr_ssim"]
VMAF_MODEL = "version=vmaf_v0.6.1"
# One half-second window per WINDOW_SPACING_SECONDS of video, at most three: a thin sample, but
# each costs about a second of CPU (the source decoded from its keyframe before the window,
# every rendition scaled to the top size, VMAF on a few 1080p frames), and the receipts must
# stay under 15% of the transcode's CPU time (bench/quality.py).
MAX_WINDOWS = 3
WINDOW_SECONDS = 0.5
WINDOW_SPACING_SECONDS = 20.0
PERCENTILE = 5
SCORED_FRAMES_PER_WINDOW = 5
# Six inputs decode a handful of frames each, and five VMAF filters score them: thread pools
# (each with its own frame buffers) cost more than they give back at that size, about a
# sixth of the receipts' wall time here, and the filters still run side by side.
DECODER_THREADS = 1
_PSNR_LINE = re.compile(r"psnr_avg:(\S+)")
_SSIM_LINE = re.compile(r"All:(\S+)")


@dataclass(frozen=True)
class Window:
    start: float  # seconds on the renditions' clock
    seconds: float


@dataclass(frozen=True)
class Scores:
    """One rendition's per-frame scores over some windows: VMAF, or PSNR with SSIM."""

    metric: Metric
    values: tuple[float, ...]  # VMAF, or PSNR
    ssim: tuple[float, ...] = ()
    sample_seconds: float = 0.0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Scores:
        return cls(
            record["metric"],
            tuple(record["values"]),
            tuple(record.get("ssim", ())),
            float(record["sample_seconds"]),
        )

    def summary(self) -> dict[str, Any]:
        """What the scores say, as a receipt shows it."""
        values = list(self.values)
        if self.metric == "vmaf":
            return {
                "metric": "vmaf",
                "model": VMAF_MODEL.partition("=")[2],
                "vmaf_mean": round(sum(values) / len(values), 2),
                "vmaf_p5": round(percentile(values, PERCENTILE), 2),
                "frames": len(values),
            }
        return {
            "metric": "psnr_ssim",
            "psnr_mean": round(sum(values) / len(values), 2),
            "psnr_p5": round(percentile(values, PERCENTILE), 2),
            "ssim_mean": round(sum(self.ssim) / len(self.ssim), 4),
            "frames": len(values),
        }

    def receipt(self) -> dict[str, Any]:
        return self.summary() | {"sample_seconds": round(self.sample_seconds, 3)}


def pooled(scores: Sequence[Scores]) -> Scores:
    """The scores of several parts as one sample (every part measured with the same metric)."""
    if len({score.metric for score in scores}) != 1:
        raise ValueError("parts measured with different metrics")
    return Scores(
        scores[0].metric,
        tuple(value for score in scores for value in score.values),
        tuple(value for score in scores for value in score.ssim),
        sum(score.sample_seconds for score in scores),
    )


def merged_receipts(
    per_part: Sequence[Sequence[dict[str, Any] | None] | None], count: int
) -> list[dict[str, Any] | None]:
    """Each of `count` renditions' receipt from the scores the video parts measured, in part
    order (a part without a window, or whose measure failed, adds nothing). Hosts may run
    unlike ffmpegs (one with libvmaf, one without): only scores like the first part's pool.
    A part recorded before parts kept scores holds a finished receipt, which stands as it is."""
    receipts: list[dict[str, Any] | None] = []
    for index in range(count):
        records = [record for part in per_part if part and (record := part[index]) is not None]
        finished = [record for record in records if "values" not in record]
        if finished:
            receipts.append(finished[0])
        elif records:
            alike = [Scores.from_record(r) for r in records if r["metric"] == records[0]["metric"]]
            receipts.append(pooled(alike).receipt())
        else:
            receipts.append(None)
    return receipts


@dataclass(frozen=True)
class Cut:
    """Where a rendition's part of a window is read: a file, and how far into it."""

    path: Path  # one segment (MPEG-TS), an fMP4 segment joined to its init section, or a playlist
    start: float


def plan_windows(duration: float, fps: float, segment_seconds: float) -> list[Window]:
    """Windows at the start of equal parts of the video, each inside one segment, from its start (where every
    rendition has a keyframe, so nothing is decoded only to be skipped) plus half a frame at
    the lowest rendition rate ``fps``, so source and renditions cut on the same frame."""
    if duration <= 0:
        return []
    frame = 1.0 / fps if fps > 0 else 0.0
    seconds = min(WINDOW_SECONDS, duration, max(frame, segment_seconds - frame))
    count = max(1, min(MAX_WINDOWS, int(duration // WINDOW_SPACING_SECONDS)))
    half_frame = frame / 2
    windows = []
    for part in range(count):
        # The first window at the very start: the source's first keyframe is there, so the
        # source, the costliest decode, is not decoded from an earlier keyframe only to reach it.
        wanted = duration * part / count
        boundary = segment_seconds * math.floor(wanted / segment_seconds) if segment_seconds > 0 else 0.0
        start = boundary + half_frame if boundary > 0 else 0.0
        windows.append(Window(round(min(start, max(0.0, duration - seconds)), 6), seconds))
    return list(dict.fromkeys(windows))


def windows_within(windows: Sequence[Window], start: float, end: float | None) -> list[Window]:
    """The windows that start in [start, end), a part's span, on the part's own clock (its
    first segment at 0). A window lies inside one segment, and parts are whole segments, so
    a window that starts in a part ends in it too."""
    return [
        Window(round(window.start - start, 6), window.seconds)
        for window in windows
        if start <= window.start and (end is None or window.start < end)
    ]


def subsample(fps: float, window: Window) -> int:
    """Score every n-th frame of a window, about SCORED_FRAMES_PER_WINDOW of them: a 1080p
    frame costs VMAF about 40 ms of CPU, which only a sample this thin keeps under 15% of the
    transcode (bench/quality.py). The others are decoded (seeking lands on keyframes) but
    neither scaled nor scored."""
    return max(1, round(fps * window.seconds / SCORED_FRAMES_PER_WINDOW))


def _every(stream: Any, step: int) -> Any:
    # Frame numbers count from the window's cut on both sides, so both keep the same frames.
    return stream if step == 1 else stream.filter("select", f"not(mod(n,{step}))")


def percentile(values: Sequence[float], share: float) -> float:
    """The value below which ``share`` percent of ``values`` fall (linear between ranks)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * share / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _concat(streams: list[Any]) -> Any:
    return streams[0] if len(streams) == 1 else ffmpeg_python.concat(*streams, v=1, a=0)


def _cut(start: float, seconds: float) -> dict[str, str]:
    # No -ss for a window at the very start: ffmpeg 5.1's HLS demuxer returns no frame at all
    # when asked to seek to within its first frames.
    cut = {"t": f"{seconds:.6f}"}
    if start > 0:
        cut["ss"] = f"{start:.6f}"
    return cut


def locate(playlist: MediaPlaylist, window: Window) -> tuple[int, float]:
    """The segment holding the window's start, and how far into it the window starts."""
    start = 0.0
    for index, segment in enumerate(playlist.segments):
        if window.start < start + segment.duration or index == len(playlist.segments) - 1:
            return index, max(0.0, window.start - start)
        start += segment.duration
    raise ValueError("an empty media playlist")


def log_path(log_dir: Path, rendition: Rendition, metric: str) -> Path:
    return log_dir / f"{rendition.name}.{metric}.log"


def build_quality_command(
    ffmpeg: str,
    source: Path,
    info: MediaInfo,
    picture: PicturePlan,
    renditions: Sequence[Rendition],
    cuts: Sequence[Sequence[Cut]],
    windows: Sequence[Window],
    log_dir: Path,
    *,
    metric: Metric,
    every_frame: bool = False,
    source_offset: float = 0.0,
) -> list[str]:
    """One ffmpeg that writes a per-frame log for every rendition (``log_path``), scoring
    every ``subsample``-th frame of each window (each frame with ``every_frame``, for a bench
    that wants the whole clip); ``cuts[i][w]`` is where rendition i's part of window w is read.
    The windows are on the renditions' clock; ``source_offset`` is where that clock's 0 is on
    the whole video's (a part's start)."""

    def step(fps: float, window: Window) -> int:
        return 1 if every_frame else subsample(fps, window)

    assert info.video is not None and renditions and windows
    video = info.video
    width, height = max(((r.width, r.height) for r in renditions), key=lambda size: size[0] * size[1])
    # The renditions' clock starts at the source's first picture; the file's may start earlier.
    offset = max(0.0, video.start_time - info.start_time)
    rates = sorted({r.fps for r in renditions})
    references: dict[float, list[list[Any]]] = {rate: [] for rate in rates}
    distorted: list[list[Any]] = [[] for _ in renditions]
    for w, window in enumerate(windows):
        shown = ffmpeg_python.input(
            str(source),
            f=info.demuxer,
            protocol_whitelist="file",
            threads=DECODER_THREADS,
            **_cut(window.start + source_offset + offset, window.seconds),
        )[str(video.index)]
        shown = picture_steps(shown, picture).filter("setpts", "PTS-STARTPTS")
        for rate, branch in zip(rates, split_stream(shown, len(rates)), strict=True):
            users = [r for r in renditions if r.fps == rate]
            chain = (
                # Scaled and tagged as the top rendition was: a BT.601 source is compared in
                # BT.709, and a side tagged unlike the other would be converted to match it.
                tagged_bt709(
                    scale_step(
                        _every(branch.filter("fps", f"{rate:g}"), step(rate, window)),
                        width,
                        height,
                        picture,
                    ).filter("format", "yuv420p")
                )
            )
            references[rate].append(split_stream(chain, len(users)))
        for i, rendition in enumerate(renditions):
            cut = cuts[i][w]
            played = ffmpeg_python.input(
                str(cut.path),
                protocol_whitelist="file",
                threads=DECODER_THREADS,
                **_cut(cut.start, window.seconds),
            )["v:0"]
            distorted[i].append(
                _every(played.filter("setpts", "PTS-STARTPTS"), step(rendition.fps, window))
                .filter("scale", width, height, flags="bicubic")
                .filter("setsar", 1)
                .filter("format", "yuv420p")
            )
    outputs = []
    taken = dict.fromkeys(rates, 0)
    for i, rendition in enumerate(renditions):
        position = taken[rendition.fps]
        taken[rendition.fps] += 1
        reference = _concat([per_window[position] for per_window in references[rendition.fps]])
        main = _concat(distorted[i])
        if metric == "vmaf":
            scored = ffmpeg_python.filter(
                [main, reference], "libvmaf", model=VMAF_MODEL, log_fmt="json",
                log_path=str(log_path(log_dir, rendition, "vmaf")), n_threads=1,
            )  # fmt: skip
            outputs.append(ffmpeg_python.output(scored, "-", f="null"))
            continue
        main_psnr, main_ssim = split_stream(main, 2)
        reference_psnr, reference_ssim = split_stream(reference, 2)
        psnr = ffmpeg_python.filter(
            [main_psnr, reference_psnr], "psnr", stats_file=str(log_path(log_dir, rendition, "psnr"))
        )
        ssim = ffmpeg_python.filter(
            [main_ssim, reference_ssim], "ssim", stats_file=str(log_path(log_dir, rendition, "ssim"))
        )
        outputs += [ffmpeg_python.output(psnr, "-", f="null"), ffmpeg_python.output(ssim, "-", f="null")]
    command = ffmpeg_python.merge_outputs(*outputs).global_args(
        "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-progress", "pipe:1"
    )
    args: list[str] = command.compile(cmd=ffmpeg)
    return args


def vmaf_scores(text: str, sample_seconds: float = 0.0) -> Scores:
    frames = tuple(float(frame["metrics"]["vmaf"]) for frame in json.loads(text)["frames"])
    if not frames:
        raise ValueError("empty VMAF log")
    return Scores("vmaf", frames, sample_seconds=sample_seconds)


def psnr_ssim_scores(psnr_text: str, ssim_text: str, sample_seconds: float = 0.0) -> Scores:
    # An identical frame has infinite PSNR ("inf"); it is capped where a frame is that good.
    psnr = tuple(min(100.0, float(value)) for value in _PSNR_LINE.findall(psnr_text))
    ssim = tuple(float(value) for value in _SSIM_LINE.findall(ssim_text))
    if not psnr or not ssim:
        raise ValueError("empty PSNR or SSIM log")
    return Scores("psnr_ssim", psnr, ssim, sample_seconds)


def read_vmaf_log(text: str) -> dict[str, Any]:
    return vmaf_scores(text).summary()


def read_psnr_ssim_logs(psnr_text: str, ssim_text: str) -> dict[str, Any]:
    return psnr_ssim_scores(psnr_text, ssim_text).summary()


@lru_cache(maxsize=4)
def has_vmaf(ffmpeg: str) -> bool:
    """Whether this ffmpeg was built with libvmaf (Debian's is not; the static one is)."""
    try:
        listing = subprocess.run(
            [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == ["libvmaf"] for line in listing.splitlines() if line.strip())


def segment_cuts(media_dir: Path, windows: Sequence[Window], scratch: Path) -> list[Cut]:
    """Each window read from the one segment that holds it: ffmpeg's HLS demuxer, asked to
    seek, decodes the whole segment before too. An fMP4 segment is joined to its init section
    in ``scratch`` (a fragmented MP4 that plays alone)."""
    playlist_text = (media_dir / MEDIA_PLAYLIST).read_text()
    playlist = parse_media_playlist(playlist_text)
    init = init_section(playlist_text)
    cuts = []
    for window in windows:
        index, offset = locate(playlist, window)
        segment = media_dir / playlist.segments[index].uri
        if init:
            joined = scratch / f"{media_dir.name}-{index}.mp4"
            joined.write_bytes((media_dir / init).read_bytes() + segment.read_bytes())
            segment = joined
        cuts.append(Cut(segment, offset))
    return cuts


def measure_scores(
    ffmpeg: str,
    source: Path,
    info: MediaInfo,
    picture: PicturePlan,
    renditions: Sequence[Rendition],
    hls_dir: Path,
    windows: Sequence[Window],
    *,
    source_offset: float = 0.0,
    timeout: float,
    memory_limit_bytes: int | None,
    should_stop: Callable[[], bool],
) -> list[Scores]:
    """Each rendition's scores over `windows` (on the clock of the renditions in `hls_dir`,
    whose 0 is `source_offset` into the video), in order; the logs go to a temporary folder
    of this process."""
    if not renditions or info.video is None or not windows:
        return []
    metric: Metric = "vmaf" if has_vmaf(ffmpeg) else "psnr_ssim"
    sample_seconds = sum(window.seconds for window in windows)
    with tempfile.TemporaryDirectory(prefix="conveyor-quality-") as scratch:
        log_dir = Path(scratch)
        cuts = [segment_cuts(hls_dir / r.name, windows, log_dir) for r in renditions]
        args = build_quality_command(
            ffmpeg,
            source,
            info,
            picture,
            renditions,
            cuts,
            windows,
            log_dir,
            metric=metric,
            source_offset=source_offset,
        )
        run_ffmpeg(
            args,
            duration=0.0,
            should_stop=should_stop,
            timeout=timeout,
            memory_limit_bytes=memory_limit_bytes,
        )
        if metric == "vmaf":
            return [vmaf_scores(log_path(log_dir, r, "vmaf").read_text(), sample_seconds) for r in renditions]
        return [
            psnr_ssim_scores(
                log_path(log_dir, r, "psnr").read_text(),
                log_path(log_dir, r, "ssim").read_text(),
                sample_seconds,
            )
            for r in renditions
        ]
