"""Build the one ffmpeg command that turns a source into an HLS ladder, and run it under limits.

The builder is pure (probe and plan in, argument list out, composed with ffmpeg-python) so it
is tested without ffmpeg; the runner is the only code here with side effects and knows
nothing about jobs or the database.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import ffmpeg as ffmpeg_python

from services.errors import Canceled, ConveyorError, DiskFull, InvalidMedia, StageTimeout, TranscodeFailed
from services.media.confine import KILL_GRACE_SECONDS, kill_group, spawn_confined
from services.media.ladder import AudioRendition, Rendition, SubtitleRendition
from services.media.parts import PartWindow
from services.media.pictures import PicturePlan, picture_steps, scale_step, tagged_bt709
from services.media.playlists import MASTER_PLAYLIST, MEDIA_PLAYLIST, h264_level, hevc_level
from services.media.probe import REFUSED_DEMUXERS, MediaInfo
from services.media.storyboard import (
    JPEG_QUALITY,
    POSTER_FILE,
    SPRITE_FILE,
    THUMBNAIL_PATTERN,
    THUMBNAILS_DIR,
    StoryboardPlan,
    poster_steps,
    poster_time,
    storyboard_steps,
    thumbnail_steps,
)

FFMPEG = "ffmpeg"
STDERR_TAIL_LINES = 50
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})
H264_PROFILE = "high"
SegmentFormat = Literal["ts", "fmp4"]
# How ffmpeg reports ENOSPC (strerror), whichever output it was writing.
NO_SPACE = "No space left on device"
# Where ffmpeg writes a source subtitle track, whole; services/media/hls.py makes its playlist.
SUBTITLE_SOURCE_FILE = "source.vtt"
# x265 as HLS needs it: no scene-cut keyframes or open GOPs, so every segment starts on an
# IDR the other renditions share; quiet, since its banner goes to stderr.
X265_PARAMS = "scenecut=0:open-gop=0:log-level=error"
# Added to every timestamp a part writes (its copyts clock): the encoder's first decode
# timestamps lie before the first frame's, and a muxer shifts a stream that would start below
# zero by its own amount, which would differ between the first part and the others.
PART_TIMESTAMP_OFFSET_SECONDS = 10


@dataclass(frozen=True)
class Encoders:
    """Which ffmpeg runs and how hard each encoder works (settings X264_PRESET, …)."""

    ffmpeg: str = FFMPEG
    x264_preset: str = "veryfast"
    x265_preset: str = "veryfast"
    svtav1_preset: int = 10
    threads: int = 0


# A rendition's picture: width, height, frame rate.
PictureSize = tuple[int, int, float]


def _segment_frames(fps: float, segment_seconds: int) -> int:
    return max(1, round(fps * segment_seconds))


def _fps_step(
    stream: Any, rendition: Rendition, input_fps: float, variable: bool, window: PartWindow | None
) -> Any:
    # Dropping frames before scaling saves the scaler the frames that are thrown away; a
    # variable-rate input always passes through fps so every rendition is constant-rate.
    if input_fps <= 0 or variable or rendition.fps < input_fps:
        # A part keeps the frames of its window after the rate change, not before: fps puts
        # frames on a grid of the source's own clock (copyts), the same grid in every part,
        # and each grid instant belongs to exactly one window.
        return _keep_window(stream.filter("fps", f"{rendition.fps:g}"), window)
    return stream


def _keep_window(stream: Any, window: PartWindow | None) -> Any:
    """The frames whose timestamps fall in the part's [start, end) (everything without a part)."""
    if window is None:
        return stream
    bounds = {"start": f"{window.start:.6f}"}
    if window.end is not None:
        bounds["end"] = f"{window.end:.6f}"
    return stream.filter("trim", **bounds)


def split_stream(stream: Any, count: int) -> list[Any]:
    """``count`` copies of a filter graph stream (ffmpeg-python wants an explicit split)."""
    if count == 1:
        return [stream]
    node = stream.filter_multi_output("split", count)
    return [node.stream(i) for i in range(count)]


def _video_streams(
    info: MediaInfo,
    source: Any,
    renditions: Sequence[Rendition],
    picture: PicturePlan,
    storyboard: StoryboardPlan | None,
    window: PartWindow | None = None,
) -> tuple[list[Any], Any, Any]:
    """Decode once; scale the source to the top size only, and every lower size from the next
    larger one of its rate (the top picture where there is none): each step shrinks a picture
    already far smaller than the source, and renditions of one size and rate (other codecs)
    share it. Scaling a 1080p source costs about as much as decoding it, so the cascade saves
    the most after the single decode itself; a 240p picture made in four steps differs from
    one scaled straight from 1080p by about 55 dB PSNR, far below what any encoder leaves.
    Returns the streams in rendition order, then the poster's and the sprite's (None without
    a storyboard). In a part (`window`) the sprite's branch is the part's thumbnails,
    stitched later."""
    assert info.video is not None
    video = info.video
    shown = picture_steps(source[str(video.index)], picture)
    poster = sprite = None
    poster_at = poster_time(info.duration) if window is None else window.poster_at
    thumbnails = storyboard is not None and (window is None or window.thumbnails is not None)
    if storyboard is not None and (poster_at is not None or thumbnails):
        shown, *stills = split_stream(shown, 1 + (poster_at is not None) + thumbnails)
        poster = stills.pop(0) if poster_at is not None else None
        sprite = stills.pop(0) if thumbnails else None
    sizes = list(
        dict.fromkeys((r.width, r.height, r.fps) for r in sorted(renditions, key=_size, reverse=True))
    )
    users = {
        size: [i for i, r in enumerate(renditions) if (r.width, r.height, r.fps) == size] for size in sizes
    }
    top = sizes[0]
    parents = scaling_parents(sizes)
    top_rendition = renditions[users[top][0]]
    rated = _fps_step(shown, top_rendition, video.fps, video.variable_frame_rate, window)
    if rated is shown:
        rated = _keep_window(shown, window)
    pictures = {top: tagged_bt709(scale_step(rated, *top[:2], picture).filter("format", "yuv420p"))}
    streams: dict[int, Any] = {}
    for size in sizes:  # larger first, so a parent's picture is made before its children's
        if size != top:
            parent = parents[size]
            rendition = renditions[users[size][0]]
            pictures[size] = scale_step(
                _fps_step(pictures[size], rendition, parent[2], False, window), *size[:2], None
            )
        children = [child for child in sizes if parents.get(child) == size]
        branches = split_stream(pictures[size], len(users[size]) + len(children))
        streams |= dict(zip(users[size], branches, strict=False))
        pictures |= dict(zip(children, branches[len(users[size]) :], strict=True))
    if poster is not None and poster_at is not None:
        poster = poster_steps(poster, poster_at, top[0], top[1])
    if sprite is not None and storyboard is not None:
        if window is None:
            sprite = storyboard_steps(sprite, storyboard)
        elif window.thumbnails is not None:
            sprite = thumbnail_steps(_keep_window(sprite, window), storyboard, window.thumbnails)
    return [streams[i] for i in range(len(renditions))], poster, sprite


def scaling_parents(sizes: Sequence[PictureSize]) -> dict[PictureSize, PictureSize]:
    """For each size but the first (the largest), the size its picture is scaled from: the
    smallest larger one whose frames are the top picture's or already at this size's rate.
    Either way the frames this size keeps are the ones it would pick from the top picture."""
    top_rate = sizes[0][2]
    parents = {}
    for index, size in enumerate(sizes[1:], start=1):
        parents[size] = [larger for larger in sizes[:index] if larger[2] in (top_rate, size[2])][-1]
    return parents


def _size(rendition: Rendition) -> tuple[int, float]:
    return rendition.width * rendition.height, rendition.fps


def _rate_args(i: int, rendition: Rendition) -> dict[str, Any]:
    rate: dict[str, Any] = {
        f"maxrate:v:{i}": rendition.maxrate,
        f"bufsize:v:{i}": rendition.bufsize,
    }
    if rendition.crf is not None:
        rate[f"crf:v:{i}"] = rendition.crf
    else:
        rate[f"b:v:{i}"] = rendition.video_bitrate
    return rate


def _codec_args(i: int, rendition: Rendition, encoders: Encoders, segment_seconds: int) -> dict[str, Any]:
    gop = _segment_frames(rendition.fps, segment_seconds)
    # A fixed GOP of exactly one segment, no scene-cut keyframes and forced keyframes on the
    # boundary: every rendition's segment n starts on the same instant with an IDR, so a
    # player can switch renditions at any segment.
    common = {f"g:v:{i}": gop, f"keyint_min:v:{i}": gop}
    if rendition.codec == "hevc":
        level = hevc_level(rendition)
        return (
            common
            | _rate_args(i, rendition)
            | {
                f"c:v:{i}": "libx265",
                f"preset:v:{i}": encoders.x265_preset,
                f"profile:v:{i}": "main",
                # hvc1, not ffmpeg's hev1: parameter sets in the init section, which Safari needs.
                f"tag:v:{i}": "hvc1",
                f"x265-params:v:{i}": f"{X265_PARAMS}:level-idc={level / 30:g}",
            }
        )
    if rendition.codec == "av1":
        return common | {
            f"c:v:{i}": "libsvtav1",
            f"preset:v:{i}": encoders.svtav1_preset,
            f"b:v:{i}": rendition.video_bitrate,
        }
    level = h264_level(rendition)
    # High profile, 8-bit 4:2:0 (format=yuv420p in the graph) whatever the source was: 10-bit,
    # HEVC or VP9 sources come out as the H.264 every browser decodes.
    return (
        common
        | _rate_args(i, rendition)
        | {
            f"c:v:{i}": "libx264",
            f"preset:v:{i}": encoders.x264_preset,
            f"profile:v:{i}": H264_PROFILE,
            f"level:v:{i}": f"{level // 10}.{level % 10}",
        }
    )


def _audio_args(k: int, audio: AudioRendition) -> dict[str, Any]:
    # Stereo at 48 kHz is what every HLS client decodes; 5.1 at 128 kb/s would sound worse.
    return {
        f"c:a:{k}": "aac",
        f"b:a:{k}": audio.bitrate,
        f"ar:a:{k}": audio.sample_rate,
        f"ac:a:{k}": audio.channels,
    }


def variant_map(renditions: Sequence[Rendition], audio: Sequence[AudioRendition]) -> str:
    """-var_stream_map: one variant per video rendition, then one per audio rendition; the
    master that groups them is ours (services.media.playlists), not ffmpeg's."""
    video = [f"v:{i},name:{r.name}" for i, r in enumerate(renditions)]
    sound = [f"a:{k},name:{a.name}" for k, a in enumerate(audio)]
    return " ".join(video + sound)


def _reading(window: PartWindow | None) -> dict[str, Any]:
    """Input options of a part: seek to its preroll's keyframe (no exact seek: the window's trim
    is exact) and read no further than the part needs."""
    if window is None:
        return {}
    reading: dict[str, Any] = {}
    if window.seek > 0:
        reading |= {"ss": f"{window.seek:.6f}", "noaccurate_seek": None}
    if window.read_seconds is not None:
        reading["t"] = f"{window.read_seconds:.6f}"
    return reading


def _thumbnails_output(stream: Any, extras: Path, first: int) -> Any:
    # One file per thumbnail, numbered as in the whole storyboard; each as selected, none
    # repeated to fill a frame rate.
    return ffmpeg_python.output(
        stream,
        str(extras / THUMBNAILS_DIR / THUMBNAIL_PATTERN),
        f="image2",
        start_number=first,
        fps_mode="passthrough",
        **{"c:v": "mjpeg", "q:v": JPEG_QUALITY},
    )


def _image_output(stream: Any, path: Path) -> Any:
    # -update: one image written to a fixed name, not a numbered sequence.
    return ffmpeg_python.output(
        stream, str(path), f="image2", update=1, **{"c:v": "mjpeg", "q:v": JPEG_QUALITY}
    )


def subtitle_source_path(out_dir: Path, subtitle: SubtitleRendition) -> Path:
    return out_dir / subtitle.name / SUBTITLE_SOURCE_FILE


def build_hls_command(
    source: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    out_dir: Path,
    *,
    segment_seconds: int,
    audio: Sequence[AudioRendition] = (),
    subtitles: Sequence[SubtitleRendition] = (),
    picture: PicturePlan | None = None,
    encoders: Encoders = Encoders(),
    segment_format: SegmentFormat = "ts",
    storyboard: StoryboardPlan | None = None,
    window: PartWindow | None = None,
    extras_dir: Path | None = None,
) -> list[str]:
    """One ffmpeg process that decodes ``source`` once and writes every rendition as HLS.

    Produces ``out_dir/<name>/index.m3u8`` for each video and audio rendition, with MPEG-TS
    ``seg_00000.ts``… or, for ``fmp4`` (CMAF), ``init.mp4`` (``init_<name>.mp4`` when there
    are several) and ``seg_00000.m4s``…; callers then write the master with
    ``services.media.playlists.write_master_playlist``. Each subtitle track is written whole as
    WebVTT (``subtitle_source_path``). With a ``storyboard`` plan the same decode also writes
    ``poster.jpg`` and the storyboard sprite. Without video renditions (a sound-only source)
    only the audio renditions are written.

    With a `window`, the process is one part of a transcode (services/media/parts.py): it reads
    from a little before the part's start, keeps the frames of its window, numbers its
    segments from the part's first, and keeps the source's own clock (shifted by
    PART_TIMESTAMP_OFFSET_SECONDS alike in every part, so no part starts below zero), so the
    parts' segments play on as one stream. The poster, when the part holds its instant, and
    the part's storyboard thumbnails (``thumbs/thumb_00000.jpg``…) go to `extras_dir`, with
    the subtitle tracks' WebVTT: the stitch makes the rest of them.
    """
    extras = extras_dir or out_dir
    if not renditions and not audio:
        raise ValueError("at least one rendition is needed")
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    if set(info.format_name.split(",")) & REFUSED_DEMUXERS:
        raise InvalidMedia("Playlists are not accepted as a source; upload the video itself.")
    if audio and not info.has_audio:
        raise InvalidMedia("The file holds no audio stream.")
    if renditions and info.video is None:
        raise InvalidMedia("The file holds no video stream.")

    # The demuxer the probe accepted, never a fresh guess: what ffmpeg parses is what we
    # checked; and only local files, whatever the container names inside it.
    source_input = ffmpeg_python.input(
        str(source), f=info.demuxer, protocol_whitelist="file", **_reading(window)
    )
    streams: list[Any] = []
    options: dict[str, Any] = {}
    extra_outputs: list[Any] = []
    if renditions:
        picture = picture if picture is not None else PicturePlan(False, None, False)
        video, poster, sprite = _video_streams(info, source_input, renditions, picture, storyboard, window)
        streams += video
        for i, rendition in enumerate(renditions):
            options |= _codec_args(i, rendition, encoders, segment_seconds)
        # Keyframes on the segment grid of the whole stream: from the part's start (a
        # whole number of segments from the origin) on, every segment_seconds.
        grid_start = f"{window.start:.6f}+" if window is not None else ""
        options |= {
            "sc_threshold": 0,
            "force_key_frames": f"expr:gte(t,{grid_start}n_forced*{segment_seconds})",
        }
        if poster is not None:
            extra_outputs.append(_image_output(poster, extras / POSTER_FILE))
        if sprite is not None and window is None:
            extra_outputs.append(_image_output(sprite, extras / SPRITE_FILE))
        elif sprite is not None and window is not None and window.thumbnails is not None:
            extra_outputs.append(_thumbnails_output(sprite, extras, window.thumbnails.first))
    for k, track in enumerate(audio):
        streams.append(source_input[str(track.stream_index)])
        options |= _audio_args(k, track)
    for subtitle in subtitles:
        extra_outputs.append(
            ffmpeg_python.output(
                source_input[str(subtitle.stream_index)],
                str(subtitle_source_path(extras, subtitle)),
                f="webvtt",
                **{"c:s": "webvtt"},
            )
        )
    if encoders.threads > 0:
        options["threads"] = encoders.threads
    if segment_format == "fmp4":
        # ffmpeg expands %v in the init file's name only when there are several variants.
        init = "init_%v.mp4" if len(renditions) + len(audio) > 1 else "init.mp4"
        options |= {"hls_segment_type": "fmp4", "hls_fmp4_init_filename": init}
        segment_name = "seg_%05d.m4s"
    else:
        options["hls_segment_type"] = "mpegts"
        segment_name = "seg_%05d.ts"
    if window is None:
        # ffmpeg's own master is written over by services.media.playlists; a part writes none.
        options["master_pl_name"] = MASTER_PLAYLIST
    else:
        options |= {"start_number": window.first_segment, "output_ts_offset": PART_TIMESTAMP_OFFSET_SECONDS}
        if segment_format == "fmp4":
            # Each fragment carries its own decode time: the parts' fragments continue one
            # timeline behind one init section (identical in every part).
            options["hls_segment_options"] = "movflags=+frag_discont"
    hls = ffmpeg_python.output(
        *streams,
        str(out_dir / "%v" / MEDIA_PLAYLIST),
        f="hls",
        hls_time=segment_seconds,
        hls_playlist_type="vod",
        hls_flags="independent_segments",
        hls_segment_filename=str(out_dir / "%v" / segment_name),
        var_stream_map=variant_map(renditions, audio),
        **options,
    )
    command = ffmpeg_python.merge_outputs(hls, *extra_outputs).global_args(
        "-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats"
    )
    if window is not None:
        command = command.global_args("-copyts")
    args: list[str] = command.overwrite_output().compile(cmd=encoders.ffmpeg)
    return args


def _pump(stream: IO[str], sink: Callable[[str], object]) -> None:
    with contextlib.suppress(ValueError, OSError):  # the pipe closed under us at shutdown
        for line in stream:
            sink(line.rstrip("\n"))


def _out_time_seconds(line: str, seconds_per_frame: float | None) -> float | None:
    key, _, value = line.partition("=")
    if seconds_per_frame is not None:
        # Frames encoded, for a part: its out_time is on the source's clock (copyts), where
        # ffmpeg 9 reports nothing useful.
        if key == "frame":
            with contextlib.suppress(ValueError):
                return int(value) * seconds_per_frame
        return None
    # ffmpeg prints out_time_ms in microseconds too (a long-standing misnomer); both are µs.
    if key in ("out_time_us", "out_time_ms"):
        with contextlib.suppress(ValueError):
            return int(value) / 1_000_000
    return None


def _tail(lines: Iterable[str]) -> str:
    text = "\n".join(line for line in lines if line.strip())
    return text or "(ffmpeg printed nothing)"


def ffmpeg_failure(returncode: int, stderr_tail: Iterable[str]) -> ConveyorError:
    """What an ffmpeg that failed on its own means for the stage. A full disk and a kill we did
    not send (the kernel's OOM killer, an operator) say nothing about the media: another
    attempt, perhaps on another host, may well succeed. Anything else is the source's fault."""
    tail = _tail(stderr_tail)
    if NO_SPACE in tail:
        return DiskFull(f"The disk filled up while ffmpeg wrote its output: {tail}")
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if -returncode in CRASH_SIGNALS:
            # A crash is ffmpeg's own: the same input under the same limits crashes again (the
            # static build dies this way when RLIMIT_AS is too small for it even to start).
            return TranscodeFailed(f"ffmpeg crashed ({name}): {tail}")
        return TranscodeFailed(
            f"ffmpeg was killed by {name} (out of memory on the host?): {tail}", transient=True
        )
    return TranscodeFailed(f"ffmpeg exited with status {returncode}: {tail}")


def run_ffmpeg(
    args: Sequence[str],
    *,
    duration: float,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float | None = None,
    memory_limit_bytes: int | None = None,
    poll_seconds: float = 0.5,
    written_seconds: Callable[[], float] | None = None,
    seconds_per_frame: float | None = None,
) -> None:
    """Run an ffmpeg command that prints ``-progress pipe:1``; raise on stop, timeout or failure.

    ``on_progress`` gets a rising percentage of ``duration``; 100 is reserved for success so a
    stage never shows "done" for a run that then fails. ``written_seconds``, asked once per
    poll, is a second measure of progress (seconds of output complete on disk) for commands
    whose ``-progress`` report ffmpeg holds back: it prints none until every output has
    written its header. With ``seconds_per_frame``, progress counts the frames encoded
    instead of the output's time. The whole process group is killed on any way out, so no
    ffmpeg outlives the call.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    try:
        process = spawn_confined(
            args, memory_limit_bytes=memory_limit_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise TranscodeFailed(f"ffmpeg could not be started: {exc}") from exc
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None

    def read_stdout() -> None:
        _pump(stdout, lines.put)
        lines.put(None)

    readers = [
        threading.Thread(target=read_stdout, daemon=True),
        threading.Thread(target=_pump, args=(stderr, stderr_tail.append), daemon=True),
    ]
    for reader in readers:
        reader.start()
    reported = 0.0

    def report(seconds: float) -> None:
        nonlocal reported
        if duration <= 0 or on_progress is None:
            return
        percent = min(99.9, max(0.0, seconds / duration * 100))
        if percent > reported:
            reported = percent
            on_progress(percent)

    next_poll = time.monotonic()
    try:
        stdout_open = True
        while stdout_open or process.poll() is None:
            # should_stop may cost a database read, so it is asked once per poll, not per line.
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + poll_seconds
                if should_stop is not None and should_stop():
                    kill_group(process)
                    raise Canceled("The transcode was canceled.")
                if written_seconds is not None:
                    report(written_seconds())
            if deadline is not None and time.monotonic() >= deadline:
                kill_group(process)
                raise StageTimeout(f"ffmpeg ran longer than {timeout:g} s and was stopped.")
            wait = poll_seconds if deadline is None else min(poll_seconds, deadline - time.monotonic())
            if not stdout_open:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(wait, 0.0))
                continue
            try:
                line = lines.get(timeout=max(wait, 0.0))
            except queue.Empty:
                continue
            if line is None:
                stdout_open = False
                continue
            seconds = _out_time_seconds(line, seconds_per_frame)
            if seconds is not None:
                report(seconds)
    finally:
        kill_group(process)
        for reader in readers:
            reader.join(timeout=KILL_GRACE_SECONDS)
        stdout.close()
        stderr.close()
    # A full disk whatever the exit status: ffmpeg 5.1 exits 0 when only its trailer could not
    # be written, which would pass a truncated output for a finished one.
    if process.returncode != 0 or NO_SPACE in _tail(stderr_tail):
        raise ffmpeg_failure(process.returncode, stderr_tail)
    if on_progress is not None:
        on_progress(100.0)
