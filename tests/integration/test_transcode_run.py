"""Real ffmpeg end to end: plan, build, run, and check what players would read."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest

from services.config import Settings
from services.errors import Canceled, StageTimeout, TranscodeFailed
from services.ffmpeg import build_hls_command, codecs_attribute, run_ffmpeg, write_master_playlist
from services.ladder import Rendition, plan_ladder
from services.probe import MediaInfo, probe

pytestmark = pytest.mark.integration

SEGMENT_SECONDS = 1


def make_clip(path: Path, size: str, seconds: float, *, audio: bool) -> Path:
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        args += ["-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True)
    return path


@dataclass
class Transcoded:
    info: MediaInfo
    renditions: list[Rendition]
    out_dir: Path
    progress: list[float]
    ffmpeg_master: str


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory: pytest.TempPathFactory) -> Transcoded:
    work = tmp_path_factory.mktemp("transcode")
    source = make_clip(work / "source.mp4", "1280x720", 3, audio=True)
    info = probe(source)
    renditions = plan_ladder(info)
    out_dir = work / "hls"
    args = build_hls_command(source, info, renditions, out_dir, segment_seconds=SEGMENT_SECONDS)
    progress: list[float] = []
    # The production memory ceiling, so a default too tight for four encoders shows up here.
    limit = Settings().ffmpeg_memory_limit_bytes
    run_ffmpeg(
        args, duration=info.duration, on_progress=progress.append, timeout=120, memory_limit_bytes=limit
    )
    master = out_dir / "master.m3u8"
    ffmpeg_master = master.read_text()
    master.write_text(write_master_playlist(renditions, info.has_audio))
    return Transcoded(info, renditions, out_dir, progress, ffmpeg_master)


def test_master_lists_every_variant_with_bandwidth_and_resolution(transcoded: Transcoded) -> None:
    master = m3u8.load(str(transcoded.out_dir / "master.m3u8"))
    assert master.is_variant
    assert len(master.playlists) == 4
    sizes = [p.stream_info.resolution for p in master.playlists]
    assert sizes == [(426, 240), (640, 360), (854, 480), (1280, 720)]
    for playlist in master.playlists:
        assert playlist.stream_info.bandwidth > 0
        assert (transcoded.out_dir / playlist.uri).is_file()


def test_declared_codecs_match_what_ffmpeg_read_from_the_stream(transcoded: Transcoded) -> None:
    ours = [codecs_attribute(r, has_audio=True) for r in transcoded.renditions]
    theirs = [p.stream_info.codecs for p in m3u8.loads(transcoded.ffmpeg_master).playlists]
    assert theirs == ours


def test_segments_are_short_and_under_the_declared_peak(transcoded: Transcoded) -> None:
    master = m3u8.load(str(transcoded.out_dir / "master.m3u8"))
    for variant in master.playlists:
        media_dir = (transcoded.out_dir / variant.uri).parent
        playlist = m3u8.load(str(transcoded.out_dir / variant.uri))
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        assert len(playlist.segments) >= 3
        for segment in playlist.segments:
            assert segment.duration <= SEGMENT_SECONDS + 0.1
            bits_per_second = (media_dir / segment.uri).stat().st_size * 8 / segment.duration
            assert bits_per_second <= variant.stream_info.bandwidth


def test_every_segment_starts_on_a_keyframe(transcoded: Transcoded) -> None:
    for name in ("240p", "720p"):
        for segment in sorted((transcoded.out_dir / name).glob("seg_*.ts")):
            first = subprocess.run(
                ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
                 "-show_entries", "frame=key_frame,pict_type", "-of", "json", str(segment)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            frame = json.loads(first.stdout)["frames"][0]
            assert (frame["key_frame"], frame["pict_type"]) == (1, "I"), segment


def test_progress_rises_and_ends_at_100(transcoded: Transcoded) -> None:
    progress = transcoded.progress
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert progress[-1] == 100.0
    assert all(0 <= p < 100 for p in progress[:-1])


def test_the_720p_playlist_decodes(transcoded: Transcoded) -> None:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=width,height,nb_read_frames", "-of", "json",
         str(transcoded.out_dir / "720p" / "index.m3u8")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream = json.loads(done.stdout)["streams"][0]
    assert (stream["width"], stream["height"]) == (1280, 720)
    assert int(stream["nb_read_frames"]) == 90


def test_video_without_audio(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "silent.mp4", "320x240", 2, audio=False)
    info = probe(source)
    renditions = plan_ladder(info)
    run_ffmpeg(build_hls_command(source, info, renditions, tmp_path / "hls", segment_seconds=1), duration=2)
    (variant,) = m3u8.load(str(tmp_path / "hls" / "master.m3u8")).playlists
    assert variant.stream_info.codecs == codecs_attribute(renditions[0], has_audio=False)
    assert len(list((tmp_path / "hls" / "240p").glob("seg_*.ts"))) == 2


# A source that never ends on its own: -re paces it at real time, so only we can stop it.
ENDLESS = [
    "ffmpeg", "-nostdin", "-v", "error", "-progress", "pipe:1", "-nostats",
    "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=600", "-f", "null", "-",
]  # fmt: skip


def ffmpeg_children() -> list[int]:
    """Pids of live (or unreaped) ffmpeg processes whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm.startswith("ffmpeg"):
            found.append(int(entry.name))
    return found


def stop_after_first_progress() -> tuple[Callable[[float], None], Callable[[], bool], list[float]]:
    """Ask to stop once ffmpeg has proved it is running; record when the stop was asked."""
    started = threading.Event()
    asked_at: list[float] = []

    def on_progress(_: float) -> None:
        started.set()

    def should_stop() -> bool:
        if started.is_set() and not asked_at:
            asked_at.append(time.monotonic())
        return started.is_set()

    return on_progress, should_stop, asked_at


def test_stop_cancels_within_two_seconds_and_leaves_no_child() -> None:
    on_progress, should_stop, asked_at = stop_after_first_progress()
    with pytest.raises(Canceled):
        run_ffmpeg(ENDLESS, duration=600, on_progress=on_progress, should_stop=should_stop, timeout=60)
    assert time.monotonic() - asked_at[0] < 2.0
    assert ffmpeg_children() == []


def test_timeout_stops_the_run_and_leaves_no_child() -> None:
    started = time.monotonic()
    with pytest.raises(StageTimeout):
        run_ffmpeg(ENDLESS, duration=600, timeout=1.0, poll_seconds=0.2)
    assert time.monotonic() - started < 3.0
    assert ffmpeg_children() == []


def test_timeout_holds_when_ffmpeg_prints_nothing() -> None:
    silent = [a for a in ENDLESS if a not in ("-progress", "pipe:1")]
    started = time.monotonic()
    with pytest.raises(StageTimeout):
        run_ffmpeg(silent, duration=600, timeout=1.0, poll_seconds=0.2)
    assert time.monotonic() - started < 3.0
    assert ffmpeg_children() == []


def test_failure_carries_ffmpeg_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    args = ["ffmpeg", "-nostdin", "-v", "error", "-progress", "pipe:1", "-i", str(missing), "-f", "null", "-"]
    with pytest.raises(TranscodeFailed) as failure:
        run_ffmpeg(args, duration=1)
    assert "No such file or directory" in failure.value.message
    assert failure.value.code == "transcode_failed"
    assert ffmpeg_children() == []


def test_memory_limit_is_enforced() -> None:
    with pytest.raises(TranscodeFailed):
        run_ffmpeg(ENDLESS, duration=600, memory_limit_bytes=16 * 1024 * 1024, timeout=30)
    assert ffmpeg_children() == []
