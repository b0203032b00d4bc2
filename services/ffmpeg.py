"""Build the one ffmpeg command that turns a source into an HLS ladder, and run it under limits.

The builder is pure (renditions in, argument list out) so it is tested without ffmpeg; the
runner is the only code here with side effects and knows nothing about jobs or the database.
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
from pathlib import Path
from typing import IO, Literal

from services.confine import KILL_GRACE_SECONDS, kill_group, spawn_confined
from services.errors import Canceled, ConveyorError, DiskFull, InvalidMedia, StageTimeout, TranscodeFailed
from services.ladder import Rendition
from services.playlists import MASTER_PLAYLIST, MEDIA_PLAYLIST, h264_level
from services.probe import REFUSED_DEMUXERS, MediaInfo
from services.storyboard import (
    POSTER_FILE,
    SPRITE_FILE,
    StoryboardPlan,
    poster_filter,
    poster_time,
    storyboard_filter,
)

FFMPEG = "ffmpeg"
STDERR_TAIL_LINES = 50
H264_PROFILE = "high"
SegmentFormat = Literal["ts", "fmp4"]
# How ffmpeg reports ENOSPC (strerror), whichever output it was writing.
NO_SPACE = "No space left on device"
# mjpeg quality scale (2 best … 31 worst): 3 keeps a poster sharp at a fraction of PNG's size.
JPEG_QUALITY = "3"


def _segment_frames(fps: float, segment_seconds: int) -> int:
    return max(1, round(fps * segment_seconds))


def _fps_step(rendition: Rendition, input_fps: float, variable: bool) -> list[str]:
    # Dropping frames before scaling saves the scaler the frames that are thrown away; a
    # variable-rate input always passes through fps so every rendition is constant-rate.
    if input_fps <= 0 or variable or rendition.fps < input_fps:
        return [f"fps={rendition.fps:g}"]
    return []


def _filter_graph(info: MediaInfo, renditions: Sequence[Rendition], storyboard: StoryboardPlan | None) -> str:
    """Decode once; scale the source to the top rendition only, and every lower rendition from
    that (already constant-rate, far smaller) picture. Scaling a 1080p source costs about as
    much as decoding it, so the cascade saves the most after the single decode itself."""
    assert info.video is not None
    video = info.video
    *lower, top = renditions
    chains = []
    if storyboard is not None:
        chains.append("[0:v:0]split=3[top][p][b]")
        source = "[top]"
    else:
        source = "[0:v:0]"
    steps = [*_fps_step(top, video.fps, video.variable_frame_rate), f"scale={top.width}:{top.height}"]
    steps += ["setsar=1", "format=yuv420p"]
    if lower:
        labels = "".join(f"[c{i}]" for i in range(len(lower)))
        chains.append(f"{source}{','.join(steps)},split={len(renditions)}{labels}[v{len(lower)}]")
    else:
        chains.append(f"{source}{','.join(steps)}[v0]")
    for i, rendition in enumerate(lower):
        steps = [*_fps_step(rendition, top.fps, False), f"scale={rendition.width}:{rendition.height}"]
        chains.append(f"[c{i}]{','.join([*steps, 'setsar=1'])}[v{i}]")
    if storyboard is not None:
        chains.append(f"[p]{poster_filter(poster_time(info.duration), top.width, top.height)}[poster]")
        chains.append(f"[b]{storyboard_filter(storyboard)}[sprite]")
    return ";".join(chains)


def _video_args(
    info: MediaInfo, renditions: Sequence[Rendition], segment_seconds: int, preset: str
) -> list[str]:
    args: list[str] = []
    for i, rendition in enumerate(renditions):
        gop = str(_segment_frames(rendition.fps, segment_seconds))
        level = h264_level(rendition)
        args += [
            "-map", f"[v{i}]",
            f"-c:v:{i}", "libx264",
            f"-b:v:{i}", str(rendition.video_bitrate),
            f"-maxrate:v:{i}", str(rendition.maxrate),
            f"-bufsize:v:{i}", str(rendition.bufsize),
            f"-level:v:{i}", f"{level // 10}.{level % 10}",
            # A fixed GOP of exactly one segment, no scene-cut keyframes and forced keyframes on
            # the boundary: every rendition's segment n starts on the same instant with an IDR,
            # so a player can switch renditions at any segment.
            f"-g:v:{i}", gop,
            f"-keyint_min:v:{i}", gop,
        ]  # fmt: skip
    # High profile, 8-bit 4:2:0 (format=yuv420p in the graph) whatever the source was: 10-bit,
    # HEVC or VP9 sources come out as the H.264 every browser decodes.
    args += [
        "-preset", preset,
        "-profile:v", H264_PROFILE,
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds})",
    ]  # fmt: skip
    if info.has_audio:
        for i, rendition in enumerate(renditions):
            args += ["-map", "0:a:0", f"-c:a:{i}", "aac", f"-b:a:{i}", str(rendition.audio_bitrate)]
    return args


def _variant_map(info: MediaInfo, renditions: Sequence[Rendition]) -> str:
    def variant(i: int, rendition: Rendition) -> str:
        if rendition.audio_only:
            return f"a:{i},name:{rendition.name}"
        if info.has_audio:
            return f"v:{i},a:{i},name:{rendition.name}"
        return f"v:{i},name:{rendition.name}"

    return " ".join(variant(i, r) for i, r in enumerate(renditions))


def _image_output(label: str, path: Path) -> list[str]:
    # -update: one image written to a fixed name, not a numbered sequence.
    return ["-map", label, "-c:v", "mjpeg", "-q:v", JPEG_QUALITY, "-update", "1", "-f", "image2", str(path)]


def build_hls_command(
    source: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    out_dir: Path,
    *,
    segment_seconds: int,
    preset: str = "veryfast",
    threads: int = 0,
    segment_format: SegmentFormat = "ts",
    storyboard: StoryboardPlan | None = None,
) -> list[str]:
    """One ffmpeg process that decodes ``source`` once and writes every rendition as HLS.

    Produces ``out_dir/master.m3u8`` and ``out_dir/<name>/index.m3u8`` with MPEG-TS
    ``seg_00000.ts``… or, for ``fmp4`` (CMAF), ``init.mp4`` (``init_<name>.mp4`` when there
    are several) and ``seg_00000.m4s``…; callers then overwrite the master with
    ``services.playlists.write_master_playlist``. With a ``storyboard`` plan the same decode
    also writes ``poster.jpg`` and the storyboard sprite. An audio-only plan (the one
    ``AUDIO_ONLY`` rendition) maps the audio alone.
    """
    if not renditions:
        raise ValueError("at least one rendition is needed")
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    if set(info.format_name.split(",")) & REFUSED_DEMUXERS:
        raise InvalidMedia("Playlists are not accepted as a source; upload the video itself.")
    audio_only = renditions[0].audio_only
    if audio_only and not info.has_audio:
        raise InvalidMedia("The file holds no audio stream.")
    if not audio_only and info.video is None:
        raise InvalidMedia("The file holds no video stream.")

    args = [
        FFMPEG, "-nostdin", "-hide_banner", "-y", "-loglevel", "error",
        "-progress", "pipe:1", "-nostats",
        "-protocol_whitelist", "file",
        # The demuxer the probe accepted, never a fresh guess: what ffmpeg parses is what we checked.
        "-f", info.demuxer,
        "-i", str(source),
    ]  # fmt: skip
    if audio_only:
        args += ["-map", "0:a:0", "-c:a:0", "aac", "-b:a:0", str(renditions[0].audio_bitrate)]
        storyboard = None
    else:
        args += ["-filter_complex", _filter_graph(info, renditions, storyboard)]
        args += _video_args(info, renditions, segment_seconds, preset)
    if threads > 0:
        args += ["-threads", str(threads)]
    if info.has_audio:
        # Stereo is what every HLS client decodes; 5.1 at 64 kb/s would also sound worse.
        args += ["-ac", "2"]
    if segment_format == "fmp4":
        # ffmpeg expands %v in the init file's name only when there are several variants.
        init = "init_%v.mp4" if len(renditions) > 1 else "init.mp4"
        segments = ["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", init]
        segment_name = "seg_%05d.m4s"
    else:
        segments, segment_name = ["-hls_segment_type", "mpegts"], "seg_%05d.ts"
    args += [
        "-f", "hls",
        "-hls_time", str(segment_seconds),
        "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        *segments,
        "-hls_segment_filename", str(out_dir / "%v" / segment_name),
        "-master_pl_name", MASTER_PLAYLIST,
        "-var_stream_map", _variant_map(info, renditions),
        str(out_dir / "%v" / MEDIA_PLAYLIST),
    ]  # fmt: skip
    if storyboard is not None:
        args += _image_output("[poster]", out_dir / POSTER_FILE) + _image_output(
            "[sprite]", out_dir / SPRITE_FILE
        )
    return args


def _pump(stream: IO[str], sink: Callable[[str], object]) -> None:
    with contextlib.suppress(ValueError, OSError):  # the pipe closed under us at shutdown
        for line in stream:
            sink(line.rstrip("\n"))


def _out_time_seconds(line: str) -> float | None:
    key, _, value = line.partition("=")
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
) -> None:
    """Run an ffmpeg command that prints ``-progress pipe:1``; raise on stop, timeout or failure.

    ``on_progress`` gets a rising percentage of ``duration``; 100 is reserved for success so a
    stage never shows "done" for a run that then fails. ``written_seconds``, asked once per
    poll, is a second measure of progress (seconds of output complete on disk) for commands
    whose ``-progress`` report ffmpeg holds back: it prints none until every output has
    written its header. The whole process group is killed on any way out, so no ffmpeg
    outlives the call.
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
            seconds = _out_time_seconds(line)
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
