"""Real ffmpeg end to end: plan, build, run, and check what players would read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.config import Settings
from services.errors import Canceled, ConveyorError, StageTimeout, TranscodeFailed
from services.media.ffmpeg import build_hls_command, run_ffmpeg
from services.media.hls import measure_variant, transcode_to_hls
from services.media.ladder import plan_ladder
from services.media.playlists import codecs_attribute
from services.media.probe import probe

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
    output: dict[str, Any]
    out_dir: Path
    progress: list[float]


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory: pytest.TempPathFactory) -> Transcoded:
    work = tmp_path_factory.mktemp("transcode")
    source = make_clip(work / "source.mp4", "1280x720", 3, audio=True)
    out_dir = work / "hls"
    progress: list[float] = []
    # The production preset and memory ceiling: a default too tight for four encoders, or a
    # CODECS string that stops matching the encoder's profile and level, shows up here.
    settings = Settings(segment_seconds=SEGMENT_SECONDS, x264_preset="veryfast")
    output = transcode_to_hls(
        source,
        out_dir,
        settings,
        info=probe(source),
        requested=None,
        on_progress=progress.append,
        should_stop=lambda: False,
    )
    return Transcoded(output, out_dir, progress)


def test_master_lists_every_variant_with_bandwidth_and_resolution(transcoded: Transcoded) -> None:
    master = m3u8.load(str(transcoded.out_dir / "master.m3u8"))
    assert master.is_variant
    assert len(master.playlists) == 4
    sizes = [p.stream_info.resolution for p in master.playlists]
    assert sizes == [(426, 240), (640, 360), (854, 480), (1280, 720)]
    for playlist in master.playlists:
        assert playlist.stream_info.bandwidth >= playlist.stream_info.average_bandwidth > 0
        assert playlist.stream_info.frame_rate == 30.0
        assert (transcoded.out_dir / playlist.uri).is_file()


def test_declared_codecs_match_the_encoded_stream(transcoded: Transcoded) -> None:
    master = m3u8.load(str(transcoded.out_dir / "master.m3u8"))
    for variant in master.playlists:
        first = next((transcoded.out_dir / variant.uri).parent.glob("seg_*.ts"))
        done = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=profile,level,pix_fmt", "-of", "json", str(first)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        stream = json.loads(done.stdout)["streams"][0]
        assert (stream["profile"], stream["pix_fmt"]) == ("High", "yuv420p")
        assert variant.stream_info.codecs == f"avc1.6400{stream['level']:02x},mp4a.40.2"


def test_bandwidth_is_the_measured_peak_and_average(transcoded: Transcoded) -> None:
    master = m3u8.load(str(transcoded.out_dir / "master.m3u8"))
    sound = measure_variant(transcoded.out_dir / "audio-0")
    assert 100_000 < sound.average <= sound.peak < 200_000  # one 128 kb/s AAC track
    for variant, recorded in zip(master.playlists, transcoded.output["renditions"], strict=True):
        media_dir = (transcoded.out_dir / variant.uri).parent
        playlist = m3u8.load(str(transcoded.out_dir / variant.uri))
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        assert len(playlist.segments) >= 3
        rates, total_bits, total_seconds = [], 0, 0.0
        for segment in playlist.segments:
            assert segment.duration <= SEGMENT_SECONDS + 0.1
            bits = (media_dir / segment.uri).stat().st_size * 8
            total_bits, total_seconds = total_bits + bits, total_seconds + segment.duration
            rates.append(bits / segment.duration)
        # Every segment here lasts a full target duration, so each one alone is a qualifying run.
        # The variant's rates include those of the audio rendition it refers to.
        declared = variant.stream_info.bandwidth - sound.peak
        assert declared >= max(rates) >= declared - 1
        assert variant.stream_info.average_bandwidth - sound.average == pytest.approx(
            total_bits / total_seconds, abs=1
        )
        assert recorded["bandwidth"] == variant.stream_info.bandwidth
        assert recorded["average_bandwidth"] == variant.stream_info.average_bandwidth


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


def test_progress_comes_with_the_segments_long_before_the_storyboard(tmp_path: Path) -> None:
    """ffmpeg holds back its -progress report until every output has a header, and the sprite
    gets one only with its last thumbnail (here at 15 s of 20 s, the storyboard taking one
    every 5 s): the transcode reports progress from its complete segments before that."""
    source = make_clip(tmp_path / "clip.mp4", "640x360", 20, audio=True)
    settings = Settings(segment_seconds=2, storyboard_interval_seconds=5)
    progress: list[float] = []
    output = transcode_to_hls(
        source,
        tmp_path / "hls",
        settings,
        info=probe(source),
        requested=None,
        on_progress=progress.append,
        should_stop=lambda: False,
    )
    assert output["storyboard"]["count"] == 4
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert 0 < progress[0] < 75
    assert len([p for p in progress if p < 75]) >= 3


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


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MB filesystem (tmpfs; the tests run as root), to fill up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_a_transient_disk_full(tmp_path: Path, tiny_disk: Path) -> None:
    source = make_clip(tmp_path / "source.mp4", "640x360", 6, audio=True)
    with pytest.raises(ConveyorError) as failure:
        transcode_to_hls(
            source,
            tiny_disk / "out",
            Settings(segment_seconds=2, x264_preset="ultrafast"),
            info=probe(source),
            requested=None,
            on_progress=lambda _: None,
            should_stop=lambda: False,
        )
    assert (failure.value.code, failure.value.transient) == ("disk_full", True)
    assert ffmpeg_children() == []


def test_an_ffmpeg_killed_from_outside_is_a_transient_failure() -> None:
    """The kernel's OOM killer (or an operator) says nothing about the media: retry it."""

    def kill_it(_: float) -> None:
        for pid in ffmpeg_children():
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(TranscodeFailed) as failure:
        run_ffmpeg(ENDLESS, duration=600, on_progress=kill_it, timeout=60)
    assert failure.value.transient and "SIGKILL" in failure.value.message
    assert ffmpeg_children() == []
