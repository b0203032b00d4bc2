"""Build the one ffmpeg command that turns a source into an HLS ladder, and run it under limits.

The builder is pure (renditions in, argument list out) so it is tested without ffmpeg; the
runner is the only code here with side effects and knows nothing about jobs or the database.
"""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from services.errors import Canceled, InvalidMedia, StageTimeout, TranscodeFailed
from services.ladder import Rendition
from services.probe import MediaInfo

FFMPEG = "ffmpeg"
MASTER_PLAYLIST = "master.m3u8"
MEDIA_PLAYLIST = "index.m3u8"
STDERR_TAIL_LINES = 50
KILL_GRACE_SECONDS = 1.0
H264_PROFILE = "high"
TS_OVERHEAD_PERCENT = 10
# Playlist demuxers open further URLs named inside the file, so a "video" that is really an
# m3u8 or ffconcat list could read other local files into the picture despite the protocol
# whitelist. Real uploads never probe as these.
REFUSED_INPUT_FORMATS = frozenset({"hls", "concat"})

# (level_idc, max macroblocks per second, max macroblocks per frame) from H.264 Table A-1.
# The level is declared per rendition so the master playlist's CODECS tells a player the
# truth, and so x264 bounds its reference frames to what that level's decoders hold.
_H264_LEVELS: tuple[tuple[int, int, int], ...] = (
    (30, 40_500, 1_620),
    (31, 108_000, 3_600),
    (32, 216_000, 5_120),
    (40, 245_760, 8_192),
    (42, 522_240, 8_704),
    (50, 589_824, 22_080),
    (51, 983_040, 36_864),
    (52, 2_073_600, 36_864),
)


def h264_level(rendition: Rendition) -> int:
    """Smallest H.264 level_idc (e.g. 40 for 4.0) whose decoders handle this rendition."""
    frame_mbs = -(-rendition.width // 16) * -(-rendition.height // 16)
    mbs_per_second = frame_mbs * rendition.fps
    for level, max_mbps, max_fs in _H264_LEVELS:
        if frame_mbs <= max_fs and mbs_per_second <= max_mbps:
            return level
    return _H264_LEVELS[-1][0]


def codecs_attribute(rendition: Rendition, has_audio: bool) -> str:
    # avc1.PPCCLL: profile_idc 100 (High) = 0x64, no constraint flags, then the level.
    video = f"avc1.6400{h264_level(rendition):02x}"
    return f"{video},mp4a.40.2" if has_audio else video


def _segment_frames(fps: float, segment_seconds: int) -> int:
    return max(1, round(fps * segment_seconds))


def _filter_graph(info: MediaInfo, renditions: Sequence[Rendition]) -> str:
    assert info.video is not None
    source_fps = info.video.fps
    labels = "".join(f"[s{i}]" for i in range(len(renditions)))
    chains = [f"[0:v:0]split={len(renditions)}{labels}"]
    for i, rendition in enumerate(renditions):
        steps = []
        if source_fps <= 0 or rendition.fps < source_fps:
            # Dropping frames before scaling saves the scaler the frames that are thrown away.
            steps.append(f"fps={rendition.fps:g}")
        steps += [f"scale={rendition.width}:{rendition.height}", "setsar=1", "format=yuv420p"]
        chains.append(f"[s{i}]{','.join(steps)}[v{i}]")
    return ";".join(chains)


def build_hls_command(
    source: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    out_dir: Path,
    *,
    segment_seconds: int,
    preset: str = "veryfast",
    threads: int = 0,
) -> list[str]:
    """One ffmpeg process that decodes ``source`` once and writes every rendition as HLS.

    Produces ``out_dir/master.m3u8`` and ``out_dir/<name>/index.m3u8`` with
    ``seg_00000.ts``…; callers then overwrite the master with :func:`write_master_playlist`.
    """
    if info.video is None:
        raise InvalidMedia("The file holds no video stream.")
    if not renditions:
        raise ValueError("at least one rendition is needed")
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    if set(info.format_name.split(",")) & REFUSED_INPUT_FORMATS:
        raise InvalidMedia("Playlists are not accepted as a source; upload the video itself.")

    args = [
        FFMPEG, "-nostdin", "-hide_banner", "-y", "-loglevel", "error",
        "-progress", "pipe:1", "-nostats",
        "-protocol_whitelist", "file",
        "-i", str(source),
        "-filter_complex", _filter_graph(info, renditions),
    ]  # fmt: skip
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
    args += [
        "-preset", preset,
        "-profile:v", H264_PROFILE,
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds})",
    ]  # fmt: skip
    if threads > 0:
        args += ["-threads", str(threads)]
    if info.has_audio:
        for i, rendition in enumerate(renditions):
            args += ["-map", "0:a:0", f"-c:a:{i}", "aac", f"-b:a:{i}", str(rendition.audio_bitrate)]
        # Stereo is what every HLS client decodes; 5.1 at 64 kb/s would also sound worse.
        args += ["-ac", "2"]
    variants = " ".join(
        f"v:{i},a:{i},name:{r.name}" if info.has_audio else f"v:{i},name:{r.name}"
        for i, r in enumerate(renditions)
    )
    args += [
        "-f", "hls",
        "-hls_time", str(segment_seconds),
        "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out_dir / "%v" / "seg_%05d.ts"),
        "-master_pl_name", MASTER_PLAYLIST,
        "-var_stream_map", variants,
        str(out_dir / "%v" / MEDIA_PLAYLIST),
    ]  # fmt: skip
    return args


def _with_ts_overhead(bits_per_second: int) -> int:
    # Encoder rates count elementary-stream bits only; MPEG-TS adds 188-byte packet headers,
    # PES headers and a PAT/PMT per segment. Measured 3-9 % on our ladder with 4 s segments
    # (most on 240p, where audio weighs more); 10 % keeps the declared peak above real ones.
    return -(-bits_per_second * (100 + TS_OVERHEAD_PERCENT) // 100)


def write_master_playlist(renditions: Sequence[Rendition], has_audio: bool) -> str:
    """The master playlist for the output of :func:`build_hls_command`, to replace ffmpeg's.

    ffmpeg 5.1 does write RESOLUTION and CODECS (read from the SPS, so they match
    :func:`codecs_attribute`), but its BANDWIDTH is 1.1 x the *average* bitrate while HLS
    asks for the peak, and it leaves out AVERAGE-BANDWIDTH and FRAME-RATE, which players use
    to pick a first variant and to skip high frame rates they cannot decode.
    """
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition in renditions:
        audio = rendition.audio_bitrate if has_audio else 0
        attributes = [
            f"BANDWIDTH={_with_ts_overhead(rendition.maxrate + audio)}",
            f"AVERAGE-BANDWIDTH={_with_ts_overhead(rendition.video_bitrate + audio)}",
            f"RESOLUTION={rendition.width}x{rendition.height}",
            f"FRAME-RATE={rendition.fps:.3f}",
            f'CODECS="{codecs_attribute(rendition, has_audio)}"',
        ]
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), f"{rendition.name}/{MEDIA_PLAYLIST}"]
    return "\n".join(lines) + "\n"


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


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


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the leader."""
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(lines: Iterable[str]) -> str:
    text = "\n".join(line for line in lines if line.strip())
    return text or "(ffmpeg printed nothing)"


def run_ffmpeg(
    args: Sequence[str],
    *,
    duration: float,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float | None = None,
    memory_limit_bytes: int | None = None,
    poll_seconds: float = 0.5,
) -> None:
    """Run an ffmpeg command that prints ``-progress pipe:1``; raise on stop, timeout or failure.

    ``on_progress`` gets a rising percentage of ``duration``; 100 is reserved for success so a
    stage never shows "done" for a run that then fails. The whole process group is killed on
    any way out, so no ffmpeg outlives the call.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    try:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            # Its own session, so killing the group reaches anything ffmpeg forks and a
            # Ctrl-C meant for the worker is not also delivered to ffmpeg.
            start_new_session=True,
            preexec_fn=None if memory_limit_bytes is None else _limit_memory(memory_limit_bytes),
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
    reported = -1.0
    next_stop_check = time.monotonic()
    try:
        stdout_open = True
        while stdout_open or process.poll() is None:
            # should_stop may cost a database read, so it is asked once per poll, not per line.
            if should_stop is not None and time.monotonic() >= next_stop_check:
                next_stop_check = time.monotonic() + poll_seconds
                if should_stop():
                    _kill_group(process)
                    raise Canceled("The transcode was canceled.")
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(process)
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
            if seconds is None or duration <= 0 or on_progress is None:
                continue
            percent = min(99.9, max(0.0, seconds / duration * 100))
            if percent > reported:
                reported = percent
                on_progress(percent)
    finally:
        _kill_group(process)
        for reader in readers:
            reader.join(timeout=KILL_GRACE_SECONDS)
        stdout.close()
        stderr.close()
    if process.returncode != 0:
        raise TranscodeFailed(f"ffmpeg exited with status {process.returncode}: {_tail(stderr_tail)}")
    if on_progress is not None:
        on_progress(100.0)
