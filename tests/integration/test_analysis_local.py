"""The local analyzer against real ffmpeg, on short clips generated with lavfi."""

from __future__ import annotations

import math
import subprocess
import threading
from pathlib import Path

import pytest

from services.analysis.backends import smallest_picture
from services.analysis.local import analyze_local
from services.config import Settings, get_settings
from services.errors import AnalysisFailed, Canceled
from services.media.hls import transcode_to_hls
from services.media.probe import AudioStream, MediaInfo, probe
from tests.fixtures import wait_until
from tests.media import make_clip
from tests.processes import ffmpeg_for

pytestmark = pytest.mark.integration

TOLERANCE = 0.15
PICTURE = "s=320x240:r=30"
# The analyze stage runs the configured ffmpeg (the static build), so the tests run it too.
FFMPEG = get_settings().ffmpeg_path


def render(target: Path, sources: list[str], graph: str, maps: list[str]) -> Path:
    """Encode lavfi `sources` through `graph` into `target`, as an uploaded file would be."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for source in sources:
        args += ["-f", "lavfi", "-i", source]
    args += ["-filter_complex", graph]
    for label in maps:
        args += ["-map", label]
    if "[v]" in maps:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if "[a]" in maps:
        args += ["-c:a", "aac", "-b:a", "96k"]
    subprocess.run([*args, str(target)], check=True, capture_output=True)
    return target


@pytest.fixture
def black_then_picture(tmp_path: Path) -> Path:
    """1 s black then 2 s testsrc2; audio: 1 s tone, 1 s silence, 1 s tone."""
    return render(
        tmp_path / "black_then_picture.mp4",
        [
            f"color=black:{PICTURE}:d=1",
            f"testsrc2={PICTURE}:d=2",
            "sine=frequency=440:sample_rate=48000:duration=1",
            "anullsrc=r=48000:cl=mono",
            "sine=frequency=440:sample_rate=48000:duration=1",
        ],
        "[0:v][1:v]concat=n=2:v=1:a=0[v];[3:a]atrim=duration=1[gap];[2:a][gap][4:a]concat=n=3:v=0:a=1[a]",
        ["[v]", "[a]"],
    )


def near(value: float, expected: float) -> bool:
    return abs(value - expected) <= TOLERANCE


def test_finds_black_silence_and_loudness(black_then_picture: Path) -> None:
    result = analyze_local(black_then_picture, probe(black_then_picture), ffmpeg=FFMPEG)

    assert result["backend"] == "local"
    assert [result[key] for key in ("width", "height", "has_video", "has_audio")] == [320, 240, True, True]
    [black] = result["black_segments"]
    assert near(black["start"], 0.0) and near(black["end"], 1.0)
    [silence] = result["silences"]
    assert near(silence["start"], 1.0) and near(silence["end"], 2.0)
    integrated = result["loudness"]["integrated_lufs"]
    assert isinstance(integrated, float) and math.isfinite(integrated) and integrated < 0
    assert result["loudness"]["true_peak_dbtp"] < 0
    assert result["summary"].endswith("1 silence, 1 black segment")


def test_finds_the_cut_between_two_pictures(tmp_path: Path) -> None:
    clip = render(
        tmp_path / "red_then_blue.mp4",
        [f"color=red:{PICTURE}:d=1.5", f"color=blue:{PICTURE}:d=1.5"],
        "[0:v][1:v]concat=n=2:v=1:a=0[v]",
        ["[v]"],
    )
    result = analyze_local(clip, probe(clip), ffmpeg=FFMPEG)

    [cut] = result["scene_cuts"]
    assert near(cut["time"], 1.5)
    assert 0 < cut["score"] <= 1
    assert result["black_segments"] == []


def test_without_audio_there_is_no_loudness(tmp_path: Path) -> None:
    clip = render(tmp_path / "mute.mp4", [f"testsrc2={PICTURE}:d=2"], "[0:v]null[v]", ["[v]"])
    result = analyze_local(clip, probe(clip), ffmpeg=FFMPEG)

    assert result["has_audio"] is False
    assert result["loudness"] is None
    assert result["silences"] == []
    assert result["audio_codec"] is None


def test_audio_only_has_loudness_and_no_picture(tmp_path: Path) -> None:
    clip = render(
        tmp_path / "tone.m4a",
        ["sine=frequency=1000:sample_rate=48000:duration=3"],
        "[0:a]volume=0.5[a]",
        ["[a]"],
    )
    result = analyze_local(clip, probe(clip), ffmpeg=FFMPEG)

    assert result["has_video"] is False
    assert [result[key] for key in ("width", "height", "fps", "video_codec")] == [None] * 4
    assert result["scene_cuts"] == result["black_segments"] == []
    assert result["silences"] == []
    integrated = result["loudness"]["integrated_lufs"]
    assert math.isfinite(integrated) and -40 < integrated < 0


def test_the_lowest_rendition_gives_the_sources_figures(black_then_picture: Path, tmp_path: Path) -> None:
    """What the analyze stage runs: pictures from the smallest rendition of the transcode,
    sound from the source. Times stay on the source's clock despite the rendition's priming."""
    hls = tmp_path / "hls"
    output = transcode_to_hls(
        black_then_picture,
        hls,
        Settings(),
        info=probe(black_then_picture),
        requested=None,
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )
    smallest = smallest_picture(output["renditions"])
    assert smallest == min(output["renditions"], key=lambda r: r["height"])["name"]
    rendition = hls / smallest / "index.m3u8"
    info = probe(black_then_picture)
    from_source = analyze_local(black_then_picture, info, ffmpeg=FFMPEG)
    from_rendition = analyze_local(black_then_picture, info, pictures=rendition, ffmpeg=FFMPEG)

    [black] = from_rendition["black_segments"]
    assert near(black["start"], 0.0) and near(black["end"], 1.0)
    assert from_rendition["silences"] == from_source["silences"]
    assert from_rendition["loudness"] == from_source["loudness"]
    assert len(from_rendition["scene_cuts"]) == len(from_source["scene_cuts"])
    for mine, theirs in zip(from_rendition["scene_cuts"], from_source["scene_cuts"], strict=True):
        assert abs(mine["time"] - theirs["time"]) <= 1 / 30


def test_a_slow_analysis_is_killed(black_then_picture: Path) -> None:
    with pytest.raises(AnalysisFailed) as failure:
        analyze_local(black_then_picture, probe(black_then_picture), timeout=0.001, ffmpeg=FFMPEG)
    assert failure.value.code == "timeout"


def test_an_unreadable_file_fails_with_ffmpegs_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 64)
    # The probe would refuse this file; a hand-made description gets it to ffmpeg.
    info = MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=3.0,
        size_bytes=junk.stat().st_size,
        bit_rate=0,
        video=None,
        audio=AudioStream(codec="aac", channels=1, sample_rate=48000),
        stream_count=1,
    )
    with pytest.raises(AnalysisFailed) as failure:
        analyze_local(junk, info, ffmpeg=FFMPEG)
    assert failure.value.code == "analysis_failed"
    assert "Invalid data found" in failure.value.message


def test_a_stopped_analysis_ends_within_a_poll_and_leaves_no_ffmpeg(tmp_path: Path) -> None:
    """A cancel reaches the local analyzer too: its ffmpeg is killed, not waited for."""
    short = make_clip(tmp_path / "short.mp4", width=320, height=240, seconds=2)
    long = tmp_path / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "899", "-i", str(short),
         "-c", "copy", str(long)],
        check=True,
    )  # fmt: skip
    stop = threading.Event()
    outcome: list[BaseException] = []

    def analyze() -> None:
        try:
            analyze_local(long, probe(long), should_stop=stop.is_set, ffmpeg=FFMPEG)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=analyze)
    runner.start()
    wait_until(lambda: ffmpeg_for(str(long)), timeout=30, what="the analysis's ffmpeg")
    stop.set()
    runner.join(timeout=2.0)
    assert not runner.is_alive(), "the analysis did not stop within 2 s"
    assert [type(exc) for exc in outcome] == [Canceled]
    assert not ffmpeg_for(str(long))
