"""Real-world inputs through the transcode stage's work (probe → plan → one ffmpeg → master),
each on a tiny clip generated with ffmpeg; what players would read is checked with m3u8 and
ffprobe."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.config import Settings
from services.media.hls import transcode_to_hls
from services.media.probe import probe, probe_limits

pytestmark = pytest.mark.integration

SEGMENT_SECONDS = 2


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def lavfi_clip(
    path: Path,
    *,
    size: str = "320x240",
    seconds: float = 1.0,
    fps: int = 30,
    audio: bool = True,
    video_args: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    audio_args: tuple[str, ...] = ("-c:a", "aac"),
) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}", *audio_args]
    ffmpeg(*args, *video_args, str(path))
    return path


def transcode(source: Path, out: Path, requested: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    settings = Settings(segment_seconds=SEGMENT_SECONDS, **kwargs)
    return transcode_to_hls(
        source,
        out,
        settings,
        info=probe(source, probe_limits(settings)),
        requested=requested,
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )


def streams(playlist: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """ffprobe of a media playlist: its video and audio stream, by codec_type."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", *extra, "-show_streams", "-of", "json", str(playlist)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {s["codec_type"]: s for s in json.loads(done.stdout)["streams"]}


def variants(out: Path) -> dict[str, m3u8.Playlist]:
    return {p.uri.split("/")[0]: p for p in m3u8.load(str(out / "master.m3u8")).playlists}


def frame_times(playlist: Path) -> list[float]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
         "-of", "json", str(playlist)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [float(f["pts_time"]) for f in json.loads(done.stdout)["frames"]]


def test_portrait_ladder_by_the_short_side(tmp_path: Path) -> None:
    source = lavfi_clip(tmp_path / "portrait.mp4", size="1080x1920", seconds=0.5, fps=10)
    output = transcode(source, tmp_path / "hls", ["240p", "1080p"])
    assert [(r["name"], r["width"], r["height"]) for r in output["renditions"]] == [
        ("240p", 240, 426),
        ("1080p", 1080, 1920),
    ]
    assert variants(tmp_path / "hls")["1080p"].stream_info.resolution == (1080, 1920)
    video = streams(tmp_path / "hls" / "240p" / "index.m3u8")["video"]
    assert (video["width"], video["height"]) == (240, 426)


def test_odd_size_gets_even_sides_aspect_kept_and_no_upscale(tmp_path: Path) -> None:
    # testsrc2 only draws even sizes, and 4:2:0 H.264 cannot code odd ones; FFV1 keeps them.
    args = ("-vf", "scale=853:481,setsar=1", "-c:v", "ffv1")
    source = lavfi_clip(tmp_path / "odd.mkv", seconds=0.5, video_args=args)
    transcode(source, tmp_path / "hls")
    sizes = {name: v.stream_info.resolution for name, v in variants(tmp_path / "hls").items()}
    assert sizes == {"240p": (426, 240), "360p": (638, 360), "480p": (852, 480)}
    video = streams(tmp_path / "hls" / "480p" / "index.m3u8")["video"]
    assert (video["width"], video["height"], video["pix_fmt"]) == (852, 480, "yuv420p")


def gray_frame(path: Path, width: int, height: int, *input_args: str) -> bytes:
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *input_args, "-i", str(path), "-frames:v", "1",
         "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout


def test_rotated_phone_video_is_delivered_upright(tmp_path: Path) -> None:
    # Coded 320x240 with a white top half, tagged rotate=90 the way phones tag portrait video.
    coded = tmp_path / "coded.mp4"
    picture = "color=c=black:s=320x240:r=30:d=1,drawbox=x=0:y=0:w=320:h=120:color=white:t=fill"
    ffmpeg("-f", "lavfi", "-i", picture, "-c:v", "libx264", "-preset", "ultrafast", str(coded))
    tagged = tmp_path / "tagged.mov"
    ffmpeg("-i", str(coded), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tagged))
    output = transcode(tagged, tmp_path / "hls")
    (only,) = output["renditions"]
    assert (only["width"], only["height"]) == (240, 320)
    playlist = tmp_path / "hls" / "240p" / "index.m3u8"
    video = streams(playlist)["video"]
    assert (video["width"], video["height"]) == (240, 320)
    assert not any("rotation" in side for side in video.get("side_data_list", []))
    ours = gray_frame(playlist, 240, 320)
    # What a player shows for the source: ffmpeg applies the display matrix when decoding.
    shown = gray_frame(tagged, 240, 320)
    assert sum(abs(a - b) for a, b in zip(ours, shown, strict=True)) / len(ours) < 8
    left = sum(ours[y * 240 + x] for y in range(320) for x in range(120))
    right = sum(ours[y * 240 + x] for y in range(320) for x in range(120, 240))
    assert abs(left - right) / (120 * 320) > 150  # the white half is now a side, not the top


def test_variable_frame_rate_becomes_constant_at_no_more_than_the_source_rate(tmp_path: Path) -> None:
    # 30 fps with every third frame dropped: timestamps 0, 1/30, 3/30, 4/30, … (mean 20 fps).
    source = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2",
           "-vf", "select=not(eq(mod(n\\,3)\\,2))", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", str(source))  # fmt: skip
    output = transcode(source, tmp_path / "hls")
    (only,) = output["renditions"]
    assert only["fps"] == 20.0
    assert variants(tmp_path / "hls")["240p"].stream_info.frame_rate == 20.0
    times = frame_times(tmp_path / "hls" / "240p" / "index.m3u8")
    steps = {round(b - a, 3) for a, b in itertools.pairwise(times)}
    assert steps == {0.05}
    assert abs(len(times) - 40) <= 1  # the source's last frame ends at 1.967 s


def test_sixty_fps_kept_from_720p_and_halved_below(tmp_path: Path) -> None:
    source = lavfi_clip(tmp_path / "sixty.mp4", size="1280x720", seconds=0.5, fps=60)
    transcode(source, tmp_path / "hls", ["240p", "720p"])
    rates = {name: v.stream_info.frame_rate for name, v in variants(tmp_path / "hls").items()}
    assert rates == {"240p": 30.0, "720p": 60.0}
    assert len(frame_times(tmp_path / "hls" / "720p" / "index.m3u8")) == 30
    assert len(frame_times(tmp_path / "hls" / "240p" / "index.m3u8")) == 15


def test_no_audio_track(tmp_path: Path) -> None:
    source = lavfi_clip(tmp_path / "silent.mp4", seconds=0.5, audio=False)
    transcode(source, tmp_path / "hls")
    assert variants(tmp_path / "hls")["240p"].stream_info.codecs == "avc1.64001e"
    assert set(streams(tmp_path / "hls" / "240p" / "index.m3u8")) == {"video"}


@pytest.mark.parametrize(
    ("name", "codec"), [("talk.m4a", ["-c:a", "aac"]), ("talk.mp3", ["-c:a", "libmp3lame"]), ("talk.wav", [])]
)
def test_audio_only_gets_an_audio_only_rendition(tmp_path: Path, name: str, codec: list[str]) -> None:
    source = tmp_path / name
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=3",
        "-ac",
        "1",
        *codec,
        str(source),
    )
    output = transcode(source, tmp_path / "hls")
    assert output["renditions"] == []
    assert [a["name"] for a in output["audio"]] == ["audio-0"]
    assert (output["poster"], output["storyboard"], output["picture"]) == (None, None, None)
    master = m3u8.load(str(tmp_path / "hls" / "master.m3u8"))
    (variant,) = master.playlists
    assert variant.uri == "audio-0/index.m3u8"
    assert variant.stream_info.codecs == "mp4a.40.2"
    assert variant.stream_info.resolution is None
    assert variant.stream_info.bandwidth >= variant.stream_info.average_bandwidth > 0
    (sound,) = master.media
    assert (sound.type, sound.default, sound.uri) == ("AUDIO", "YES", "audio-0/index.m3u8")
    found = streams(tmp_path / "hls" / "audio-0" / "index.m3u8")
    assert set(found) == {"audio"}
    assert (found["audio"]["codec_name"], found["audio"]["channels"]) == ("aac", 2)
    assert found["audio"]["sample_rate"] == "48000"  # resampled from the source's 44.1 kHz
    media = m3u8.load(str(tmp_path / "hls" / "audio-0" / "index.m3u8"))
    assert sum(s.duration for s in media.segments) == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "video_args", "audio_args"),
    [
        ("h264-10bit.mp4", ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"),
         ("-c:a", "aac")),
        ("hevc-10bit.mp4", ("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
                            "-x265-params", "log-level=error", "-tag:v", "hvc1"), ("-c:a", "aac")),
        ("vp9.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"), ("-c:a", "libopus")),
    ],
)  # fmt: skip
def test_browser_unfriendly_codecs_become_8_bit_h264_and_aac(
    tmp_path: Path, name: str, video_args: tuple[str, ...], audio_args: tuple[str, ...]
) -> None:
    source = lavfi_clip(tmp_path / name, seconds=0.5, video_args=video_args, audio_args=audio_args)
    # The production preset: ultrafast leaves out the tools that make x264 signal High.
    transcode(source, tmp_path / "hls", x264_preset="veryfast")
    found = streams(tmp_path / "hls" / "240p" / "index.m3u8")
    video, audio = found["video"], streams(tmp_path / "hls" / "audio-0" / "index.m3u8")["audio"]
    assert set(found) == {"video"}  # the sound is in its own rendition
    assert (video["codec_name"], video["profile"], video["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert audio["codec_name"] == "aac"


def test_half_second_clip(tmp_path: Path) -> None:
    source = lavfi_clip(tmp_path / "blink.mp4", seconds=0.5)
    output = transcode(source, tmp_path / "hls")
    media = m3u8.load(str(tmp_path / "hls" / "240p" / "index.m3u8"))
    assert len(media.segments) == 1
    assert media.segments[0].duration == pytest.approx(0.5, abs=0.05)
    assert len(frame_times(tmp_path / "hls" / "240p" / "index.m3u8")) == 15
    assert output["poster"] == "poster.jpg" and (tmp_path / "hls" / "poster.jpg").is_file()
    assert output["storyboard"]["count"] == 1


def test_long_clip_of_a_still_image(tmp_path: Path) -> None:
    still = tmp_path / "still.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", str(still))
    source = tmp_path / "still.mp4"
    ffmpeg("-loop", "1", "-framerate", "5", "-i", str(still), "-t", "60", "-c:v", "libx264",
           "-preset", "ultrafast", "-tune", "stillimage", "-pix_fmt", "yuv420p", str(source))  # fmt: skip
    output = transcode(source, tmp_path / "hls", storyboard_interval_seconds=10.0)
    media = m3u8.load(str(tmp_path / "hls" / "240p" / "index.m3u8"))
    assert len(media.segments) == 60 // SEGMENT_SECONDS
    assert sum(s.duration for s in media.segments) == pytest.approx(60.0, abs=0.3)
    board = output["storyboard"]
    assert (board["count"], board["columns"], board["rows"]) == (6, 6, 1)
    sprite = streams(tmp_path / "hls" / "storyboard.jpg")["video"]
    assert (sprite["width"], sprite["height"]) == (6 * 160, 120)


def test_fmp4_segments_and_init_sections(tmp_path: Path) -> None:
    source = lavfi_clip(tmp_path / "clip.mp4", size="640x360", seconds=1.0)
    output = transcode_to_hls(
        source,
        tmp_path / "hls",
        Settings(segment_seconds=SEGMENT_SECONDS),
        info=probe(source),
        requested=None,
        segment_format="fmp4",
        on_progress=lambda _: None,
        should_stop=lambda: False,
    )
    assert output["segment_format"] == "fmp4"
    master = m3u8.load(str(tmp_path / "hls" / "master.m3u8"))
    assert master.version == 7
    for variant in master.playlists:
        name = variant.uri.split("/")[0]
        media = m3u8.load(str(tmp_path / "hls" / variant.uri))
        assert media.segment_map[0].uri == f"init_{name}.mp4"
        assert all(s.uri.endswith(".m4s") for s in media.segments)
        assert not list((tmp_path / "hls" / name).glob("*.ts"))
        assert streams(tmp_path / "hls" / variant.uri)["video"]["codec_name"] == "h264"
    sound = m3u8.load(str(tmp_path / "hls" / "audio-0" / "index.m3u8"))
    assert sound.segment_map[0].uri == "init_audio-0.mp4"
    assert streams(tmp_path / "hls" / "audio-0" / "index.m3u8")["audio"]["codec_name"] == "aac"
