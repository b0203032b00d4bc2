"""Issue 16's sources through the transcode stage's work, on real ffmpeg output: anamorphic,
HDR, interlaced, cover art first, two languages, a subtitle track, a thin static source,
60 vs 30 fps, codecs, DASH and quality receipts. Each source is generated and tiny."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.config import Settings
from services.media.hls import transcode_to_hls
from services.media.probe import probe, probe_limits
from tests.media import cover_art_first

pytestmark = pytest.mark.integration

SEGMENT_SECONDS = 1
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def transcode(source: Path, out: Path, requested: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    options = {
        key: kwargs.pop(key) for key in ("video_codecs", "rate_control", "segment_format") if key in kwargs
    }
    settings = Settings(
        segment_seconds=kwargs.pop("segment_seconds", SEGMENT_SECONDS),
        quality_receipts=kwargs.pop("receipts", False),
        **kwargs,
    )
    return transcode_to_hls(
        source,
        out,
        settings,
        info=probe(source, probe_limits(settings)),
        requested=requested,
        on_progress=lambda _: None,
        should_stop=lambda: False,
        **options,
    )


def video_of(playlist: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(playlist)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)["streams"][0]  # type: ignore[no-any-return]


def streams_of(playlist: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(playlist)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)["streams"]  # type: ignore[no-any-return]


def master(out: Path) -> m3u8.M3U8:
    return m3u8.load(str(out / "master.m3u8"))


def display_aspect(video: dict[str, Any]) -> float:
    sar = Fraction(video.get("sample_aspect_ratio", "1:1").replace(":", "/") or "1")
    return float(video["width"] * (sar or 1) / video["height"])


@pytest.mark.parametrize(
    ("size", "sar", "requested", "top"),
    [("720x576", "64/45", None, (854, 480)), ("1440x1080", "4/3", ["240p", "1080p"], (1920, 1080))],
    ids=["pal", "hdv"],
)
def test_anamorphic_sources_come_out_square_pixel_at_16_9(
    tmp_path: Path, size: str, sar: str, requested: list[str] | None, top: tuple[int, int]
) -> None:
    source = tmp_path / "anamorphic.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration=0.4,setsar={sar}", *X264, str(source))
    assert video_of(source)["sample_aspect_ratio"] == sar.replace("/", ":")  # the source is anamorphic
    output = transcode(source, tmp_path / "hls", requested)
    for rendition in output["renditions"]:
        assert rendition["width"] / rendition["height"] == pytest.approx(16 / 9, rel=0.01)
        video = video_of(tmp_path / "hls" / rendition["name"] / "index.m3u8")
        assert (video["width"], video["height"]) == (rendition["width"], rendition["height"])
        assert video.get("sample_aspect_ratio", "1:1") == "1:1"
        assert display_aspect(video) == pytest.approx(16 / 9, rel=0.01)
    resolutions = [p.stream_info.resolution for p in master(tmp_path / "hls").playlists]
    assert resolutions[-1] == top
    assert all(w / h == pytest.approx(16 / 9, rel=0.01) for w, h in resolutions)


@pytest.mark.parametrize("transfer", ["smpte2084", "arib-std-b67"], ids=["pq", "hlg"])
def test_hdr_hevc_comes_out_8_bit_bt709_tagged(tmp_path: Path, transfer: str) -> None:
    source = tmp_path / "hdr.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=0.4,format=yuv420p10le",
        "-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
        "-x265-params", f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc",
        "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", str(source),
    )  # fmt: skip
    probed = video_of(source)
    assert (probed["codec_name"], probed["pix_fmt"], probed["color_transfer"]) == (
        "hevc",
        "yuv420p10le",
        transfer,
    )
    output = transcode(source, tmp_path / "hls")
    assert output["picture"]["tone_map"] == transfer
    for rendition in output["renditions"]:
        video = video_of(tmp_path / "hls" / rendition["name"] / "index.m3u8")
        assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
        assert (video["color_transfer"], video["color_primaries"], video["color_space"]) == ("bt709",) * 3


def gray_mean(path: Path) -> float:
    frame = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return sum(frame) / len(frame)


def test_pq_is_tone_mapped_not_just_retagged(tmp_path: Path) -> None:
    # A flat PQ grey at code 512 of 1023 is about 92 nits: a mid-grey on an SDR screen. Read
    # as if it were BT.709 it would come out around 128 of 255 anyway, so the check is that
    # tone mapping moved it to where SDR shows ~92 nits (brighter, since 100 nits is white).
    source = tmp_path / "grey.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=0x808080:s=320x240:r=25:d=0.4,format=yuv420p10le",
        "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
        "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
        "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc", str(source),
    )  # fmt: skip
    transcode(source, tmp_path / "hls")
    assert gray_mean(tmp_path / "hls" / "240p" / "index.m3u8") > gray_mean(source) + 20


def idet_verdict(path: Path) -> tuple[int, int]:
    """(interlaced, progressive) frames by idet's single-frame detection (the multi-frame one
    carries its first verdict over a few frames, too many in a clip this short)."""
    log = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(path), "-vf", "idet", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    found = re.findall(r"Single frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+)", log)
    tff, bff, progressive = (int(value) for value in found[-1])
    return tff + bff, progressive


# testsrc, not testsrc2: idet reads testsrc2's progressive frames as fields.
INTERLACED = "testsrc=size=1920x1080:rate=50:duration=0.6,tinterlace=interleave_top"


def test_1080i_declared_by_field_order_comes_out_progressive(tmp_path: Path) -> None:
    source = tmp_path / "1080i.mp4"
    ffmpeg("-f", "lavfi", "-i", INTERLACED, *X264, "-flags", "+ildct+ilme", "-x264opts", "tff=1", str(source))
    assert video_of(source)["field_order"] == "tt"
    interlaced, progressive = idet_verdict(source)
    assert interlaced > progressive  # the source really is interlaced
    output = transcode(source, tmp_path / "hls", ["1080p"])
    assert output["picture"]["deinterlace"]
    interlaced, progressive = idet_verdict(tmp_path / "hls" / "1080p" / "index.m3u8")
    assert progressive > 3 * interlaced


def test_interlacing_a_file_does_not_declare_is_found_by_idet(tmp_path: Path) -> None:
    source = tmp_path / "fields.avi"  # MPEG-4 Part 2 in AVI states no field order
    fields = INTERLACED.replace("1920x1080", "1280x720")
    ffmpeg("-f", "lavfi", "-i", fields, "-c:v", "mpeg4", "-q:v", "3", str(source))
    assert video_of(source).get("field_order", "unknown") == "unknown"
    # At the source's own size: a scaled-down picture leaves idet undecided either way.
    output = transcode(source, tmp_path / "hls", ["720p"])
    assert output["picture"]["deinterlace"]
    interlaced, progressive = idet_verdict(tmp_path / "hls" / "720p" / "index.m3u8")
    assert progressive > 3 * interlaced
    plain = tmp_path / "frames.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=720x576:rate=25:duration=0.6", "-c:v", "mpeg4", str(plain))
    assert not transcode(plain, tmp_path / "plain", ["240p"])["picture"]["deinterlace"]


def test_cover_art_stored_before_the_video_is_not_taken_for_it(tmp_path: Path) -> None:
    cover, clip = tmp_path / "cover.png", tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=600x600", "-frames:v", "1", str(cover))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1", *X264, str(clip))
    tagged = tmp_path / "tagged.mp4"
    ffmpeg("-i", str(cover), "-i", str(clip), "-map", "0", "-map", "1", "-c:v:0", "mjpeg", "-c:v:1", "copy",
           "-disposition:v:0", "attached_pic", str(tagged))  # fmt: skip
    source = cover_art_first(tagged, tmp_path / "with-cover.mp4")
    found = streams_of(source)
    assert found[0]["disposition"]["attached_pic"] == 1 and found[1]["width"] == 320
    output = transcode(source, tmp_path / "hls")
    (only,) = output["renditions"]
    assert (only["width"], only["height"]) == (320, 240)
    frames = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / "hls" / "240p" / "index.m3u8")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert int(frames.split()[0]) == 30  # the moving video, not one still of the cover
    assert abs(gray_mean(tmp_path / "hls" / "poster.jpg") - gray_mean(cover)) > 10


def two_languages(path: Path, seconds: float = 1.0) -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=880:sample_rate=22050:duration={seconds}",
        "-map", "0", "-map", "1", "-map", "2", *X264, "-c:a", "aac", "-ac:a:0", "6",
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fre",
        "-metadata:s:a:1", "title=Français", str(path),
    )  # fmt: skip
    return path


def test_two_sound_languages_become_two_audio_renditions(tmp_path: Path) -> None:
    output = transcode(two_languages(tmp_path / "two.mkv"), tmp_path / "hls")
    assert [(a["name"], a["language"], a["title"], a["default"]) for a in output["audio"]] == [
        ("audio-0", "en", "English", True),
        ("audio-1", "fr", "Français", False),
    ]
    parsed = master(tmp_path / "hls")
    assert [(m.type, m.language, m.name, m.default, m.uri) for m in parsed.media] == [
        ("AUDIO", "en", "English", "YES", "audio-0/index.m3u8"),
        ("AUDIO", "fr", "Français", "NO", "audio-1/index.m3u8"),
    ]
    for variant in parsed.playlists:
        assert variant.stream_info.audio == "audio"
        assert [s["codec_type"] for s in streams_of(tmp_path / "hls" / variant.uri)] == ["video"]
    for track in ("audio-0", "audio-1"):
        (sound,) = streams_of(tmp_path / "hls" / track / "index.m3u8")
        assert (sound["codec_name"], sound["sample_rate"], sound["channels"]) == ("aac", "48000", 2)


def test_a_subtitle_track_becomes_a_webvtt_rendition(tmp_path: Path) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:00,900\nHello from the source\n")
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1", *X264, str(clip))
    source = tmp_path / "subtitled.mp4"
    ffmpeg("-i", str(clip), "-i", str(srt), "-map", "0", "-map", "1", "-c:v", "copy", "-c:s", "mov_text",
           "-metadata:s:s:0", "language=eng", str(source))  # fmt: skip
    output = transcode(source, tmp_path / "hls")
    (subtitle,) = output["subtitles"]
    assert (subtitle["language"], subtitle["title"]) == ("en", "English")
    vtt = (tmp_path / "hls" / subtitle["vtt"]).read_text()
    assert vtt.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:")
    assert "00:00.200 --> 00:00.900\nHello from the source" in vtt
    playlist = m3u8.load(str(tmp_path / "hls" / subtitle["playlist"]))
    assert [s.uri for s in playlist.segments] == [subtitle["vtt"].split("/")[1]]
    parsed = master(tmp_path / "hls")
    (media,) = [m for m in parsed.media if m.type == "SUBTITLES"]
    assert (media.language, media.group_id, media.uri) == ("en", "subs", "text-0/index.m3u8")
    assert all(p.stream_info.subtitles == "subs" for p in parsed.playlists)
    assert not (tmp_path / "hls" / "text-0" / "source.vtt").exists()


def test_a_thin_static_source_gets_no_rung_above_one_and_a_half_its_bitrate(tmp_path: Path) -> None:
    source = tmp_path / "slide.mp4"
    # A slide: a still picture with fine detail (a test card), encoded at 250 kb/s with a
    # keyframe every second, so its bits are mostly pictures the renditions must draw again.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=1", "-frames:v", "1",
           str(tmp_path / "slide.png"))  # fmt: skip
    ffmpeg("-loop", "1", "-framerate", "30", "-t", "8", "-i", str(tmp_path / "slide.png"),
           "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-b:v", "250k", "-maxrate", "250k",
           "-bufsize", "500k", "-pix_fmt", "yuv420p", str(source))  # fmt: skip
    source_rate = int(video_of(source)["bit_rate"])
    assert 150_000 < source_rate < 300_000
    # The production segment length: BANDWIDTH is the peak over runs of about one segment.
    output = transcode(source, tmp_path / "hls", segment_seconds=4)
    assert output["renditions"]
    for rendition in output["renditions"]:
        assert rendition["video_bitrate"] <= source_rate
        assert rendition["bandwidth"] <= 1.5 * source_rate, rendition["name"]
    # Capped to the same rate, the lower rungs would only duplicate the top one.
    assert len(output["renditions"]) < 4


def test_sixty_fps_gets_about_one_and_a_half_times_the_bits_of_thirty(tmp_path: Path) -> None:
    planned: dict[int, dict[str, Any]] = {}
    for fps in (30, 60):
        source = tmp_path / f"{fps}.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={fps}:duration=2", *X264, str(source))
        output = transcode(source, tmp_path / f"hls{fps}", ["720p"], rate_control="bitrate")
        planned[fps] = output["renditions"][0]
    assert planned[60]["fps"] == 60.0 and planned[30]["fps"] == 30.0
    assert planned[60]["video_bitrate"] / planned[30]["video_bitrate"] == pytest.approx(1.5, rel=0.01)
    assert planned[60]["average_bandwidth"] / planned[30]["average_bandwidth"] > 1.25


def test_hevc_and_av1_renditions_with_dash_beside_hls(tmp_path: Path) -> None:
    source = two_languages(tmp_path / "clip.mkv", seconds=1.0)
    output = transcode(
        source, tmp_path / "hls", ["240p"], video_codecs=("h264", "hevc", "av1"), segment_format="fmp4",
        receipts=True,
    )  # fmt: skip
    assert [r["name"] for r in output["renditions"]] == ["240p", "240p-hevc", "240p-av1"]
    codecs = {p.uri.split("/")[0]: p.stream_info.codecs for p in master(tmp_path / "hls").playlists}
    assert codecs["240p"].startswith("avc1.64") and codecs["240p-hevc"].startswith("hvc1.1.6.L")
    assert codecs["240p-av1"].startswith("av01.0.") and all(c.endswith(",mp4a.40.2") for c in codecs.values())
    hevc = video_of(tmp_path / "hls" / "240p-hevc" / "index.m3u8")
    assert (hevc["codec_name"], hevc["codec_tag_string"]) == ("hevc", "hvc1")
    assert video_of(tmp_path / "hls" / "240p-av1" / "index.m3u8")["codec_name"] == "av1"
    # Receipts read fMP4 segments joined to their init section: every codec is measured.
    assert all(
        r["quality"]["metric"] == "vmaf" and r["quality"]["vmaf_mean"] > 30 for r in output["renditions"]
    )
    assert output["dash"] == "manifest.mpd"
    root = ET.parse(tmp_path / "hls" / "manifest.mpd").getroot()
    ns = "{urn:mpeg:dash:schema:mpd:2011}"
    referenced = [
        e.get("sourceURL") or e.get("media")
        for e in root.iter()
        if e.tag in (f"{ns}Initialization", f"{ns}SegmentURL")
    ]
    assert referenced and all((tmp_path / "hls" / str(uri)).is_file() for uri in referenced)
    assert {r.get("id") for r in root.iter(f"{ns}Representation")} == {
        "240p",
        "240p-hevc",
        "240p-av1",
        "audio-0",
        "audio-1",
    }


def test_quality_receipts_rank_the_renditions(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=2", *X264, str(source))
    output = transcode(source, tmp_path / "hls", ["240p", "720p"], receipts=True)
    low, high = (r["quality"] for r in output["renditions"])
    for receipt in (low, high):
        assert receipt["metric"] == "vmaf" and receipt["model"] == "vmaf_v0.6.1"
        assert 0 < receipt["vmaf_p5"] <= receipt["vmaf_mean"] <= 100
        assert receipt["frames"] == 5  # every 3rd frame of a half-second window at 30 fps
    assert high["vmaf_mean"] > low["vmaf_mean"] + 10


def test_without_libvmaf_the_receipts_are_psnr_and_ssim(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=2", *X264, str(source))
    # Debian's ffmpeg has no libvmaf.
    output = transcode(source, tmp_path / "hls", ["240p", "360p"], receipts=True, ffmpeg_path="ffmpeg")
    low, high = (r["quality"] for r in output["renditions"])
    assert low["metric"] == high["metric"] == "psnr_ssim"
    assert 20 < low["psnr_mean"] < high["psnr_mean"] < 100
    assert 0.5 < low["ssim_mean"] < high["ssim_mean"] <= 1
