"""parse_probe on canned ffprobe JSON: limits, refused formats, rotation, frame rates."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from services.errors import InvalidMedia, StorageFailed, TooLarge
from services.media.probe import (
    MediaInfo,
    ProbeLimits,
    accepted_demuxers,
    content_seconds,
    input_protocols,
    parse_probe,
    probe_failure,
)

LIMITS = ProbeLimits(max_duration_seconds=3600, max_pixels=1920 * 1080, max_streams=4)


def video_stream(width: int = 1280, height: int = 720, **extra: Any) -> dict[str, Any]:
    return {
        "codec_type": "video",
        "codec_name": "h264",
        "width": width,
        "height": height,
        "avg_frame_rate": "30/1",
        "r_frame_rate": "30/1",
        "pix_fmt": "yuv420p",
    } | extra


def audio_stream() -> dict[str, Any]:
    return {"codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"}


def probed(
    *streams: dict[str, Any], duration: str = "10.0", fmt: str = "mov,mp4,m4a,3gp,3g2,mj2"
) -> dict[str, Any]:
    return {"format": {"format_name": fmt, "duration": duration, "size": "1000"}, "streams": list(streams)}


def test_a_plain_clip() -> None:
    info = parse_probe(probed(video_stream(), audio_stream()), LIMITS)
    assert info.video is not None and info.audio is not None
    assert (info.video.width, info.video.height, info.video.fps) == (1280, 720, 30.0)
    assert not info.video.variable_frame_rate
    assert info.demuxer == "mov"


def test_rotated_phone_video_is_described_as_displayed() -> None:
    stream = video_stream(1920, 1080, side_data_list=[{"side_data_type": "Display Matrix", "rotation": -90}])
    info = parse_probe(probed(stream))
    assert info.video is not None
    assert (info.video.width, info.video.height, info.video.rotation) == (1080, 1920, 90)


def test_variable_frame_rate_is_noticed() -> None:
    info = parse_probe(probed(video_stream(avg_frame_rate="2961/100", r_frame_rate="30/1")))
    assert info.video is not None
    assert info.video.variable_frame_rate
    assert info.video.fps == pytest.approx(29.61)


def test_audio_only_has_no_video() -> None:
    info = parse_probe(probed(audio_stream(), fmt="mp3"))
    assert info.video is None and info.has_audio


def test_cover_art_is_not_video() -> None:
    art = video_stream(600, 600, disposition={"attached_pic": 1})
    info = parse_probe(probed(audio_stream(), art, fmt="mp3"))
    assert info.video is None


@pytest.mark.parametrize("fmt", ["hls", "concat", "dash", "imf", "sdp"])
def test_playlists_and_lists_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidMedia, match="Playlists"):
        parse_probe(probed(video_stream(), fmt=fmt))


def test_huge_declared_picture_is_refused_before_the_duration_is_looked_at() -> None:
    # A frame bomb declares a picture and carries almost nothing, so its duration is 0.
    with pytest.raises(TooLarge, match="16000x16000"):
        parse_probe(probed(video_stream(16000, 16000), duration="0"), LIMITS)


def test_pixels_at_the_limit_pass() -> None:
    assert parse_probe(probed(video_stream(1920, 1080)), LIMITS).video is not None


def test_too_many_streams() -> None:
    with pytest.raises(TooLarge, match="5 streams"):
        parse_probe(probed(video_stream(), *[audio_stream()] * 4), LIMITS)


def test_too_long() -> None:
    with pytest.raises(TooLarge, match="3601 s"):
        parse_probe(probed(video_stream(), duration="3601"), LIMITS)
    assert parse_probe(probed(video_stream(), duration="3601")).duration == 3601  # no limits given


def test_no_duration_or_size_or_streams_is_invalid() -> None:
    with pytest.raises(InvalidMedia, match="no duration"):
        parse_probe(probed(video_stream(), duration="0"), LIMITS)
    with pytest.raises(InvalidMedia, match="picture size"):
        parse_probe(probed(video_stream(0, 0)))
    with pytest.raises(InvalidMedia, match="no video or audio"):
        parse_probe(probed())


def test_accepted_demuxers_drop_the_refused_ones() -> None:
    listing = """File formats:
 D. = Demuxing supported
 .E = Muxing supported
 --
 D  aac             raw ADTS AAC (Advanced Audio Coding)
 D  concat          Virtual concatenation script
 DE hls             Apple HTTP Live Streaming
 D  mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV
 D  video4linux2,v4l2 Video4Linux2 device grab
  E mp4             MP4 (MPEG-4 Part 14)
"""
    assert accepted_demuxers(listing) == ["aac", "mov", "mp4", "m4a", "3gp", "3g2", "mj2"]


def test_a_recorded_probe_reads_back_as_the_same_media_info() -> None:
    """The fetch stage records asdict(info); transcode and analyze rebuild it instead of probing."""
    for info in (
        parse_probe(probed(video_stream(1920, 1080), audio_stream())),
        parse_probe(probed(audio_stream(), fmt="mp3")),
        parse_probe(probed(video_stream(avg_frame_rate="2961/100", r_frame_rate="30/1"))),
        parse_probe(
            probed(
                video_stream(sample_aspect_ratio="4:3", field_order="tt"),
                audio_stream() | {"tags": {"language": "eng"}},
                {"codec_type": "subtitle", "codec_name": "subrip"},
            )
        ),
    ):
        assert MediaInfo.from_record(json.loads(json.dumps(asdict(info)))) == info


def test_anamorphic_video_is_described_at_its_display_size() -> None:
    pal = parse_probe(probed(video_stream(720, 576, sample_aspect_ratio="64:45")))
    assert pal.video is not None
    assert (pal.video.width, pal.video.height) == (1024, 576)
    assert (pal.video.coded_width, pal.video.coded_height, pal.video.sample_aspect_ratio) == (
        720,
        576,
        "64:45",
    )
    hdv = parse_probe(probed(video_stream(1440, 1080, sample_aspect_ratio="4:3")))
    assert hdv.video is not None and (hdv.video.width, hdv.video.height) == (1920, 1080)
    unknown = parse_probe(probed(video_stream(640, 480, sample_aspect_ratio="0:1")))
    assert unknown.video is not None and unknown.video.width == 640


def test_colour_field_order_and_rates_are_read() -> None:
    stream = video_stream(
        3840,
        2160,
        codec_name="hevc",
        pix_fmt="yuv420p10le",
        color_transfer="smpte2084",
        color_primaries="bt2020",
        color_space="bt2020nc",
        field_order="progressive",
        bit_rate="12000000",
        start_time="0.040000",
    )
    info = parse_probe(probed(stream))
    assert info.video is not None
    assert info.video.hdr and not info.video.declared_interlaced
    assert (info.video.bit_rate, info.video.start_time) == (12_000_000, 0.04)
    interlaced = parse_probe(probed(video_stream(1920, 1080, field_order="tt", color_transfer="bt709")))
    assert interlaced.video is not None
    assert interlaced.video.declared_interlaced and not interlaced.video.hdr


def test_cover_art_before_the_video_is_skipped_by_index() -> None:
    art = video_stream(600, 600, codec_name="mjpeg", disposition={"attached_pic": 1})
    info = parse_probe(probed(art, video_stream(1280, 720), audio_stream()))
    assert info.video is not None
    assert (info.video.index, info.video.width) == (1, 1280)
    assert info.audio is not None and info.audio.index == 2


def test_every_sound_track_is_kept_and_the_default_is_the_main_one() -> None:
    english = audio_stream() | {"tags": {"language": "eng"}}
    french = audio_stream() | {"tags": {"language": "fre", "title": "VF"}, "disposition": {"default": 1}}
    info = parse_probe(probed(video_stream(), english, french))
    assert [(t.index, t.language, t.title, t.default) for t in info.audio_tracks] == [
        (1, "eng", "", False),
        (2, "fre", "VF", True),
    ]
    assert info.audio == info.audio_tracks[1]
    untagged = parse_probe(probed(video_stream(), audio_stream(), audio_stream()))
    assert untagged.audio == untagged.audio_tracks[0]  # no default: the first


def test_text_subtitle_tracks_are_kept_and_bitmap_ones_left_out() -> None:
    text = {"codec_type": "subtitle", "codec_name": "mov_text", "tags": {"language": "eng"}}
    bitmap = {"codec_type": "subtitle", "codec_name": "hdmv_pgs_subtitle"}
    forced = {"codec_type": "subtitle", "codec_name": "ass", "disposition": {"forced": 1}}
    info = parse_probe(probed(video_stream(), text, bitmap, forced))
    assert [(s.index, s.codec, s.language, s.forced) for s in info.subtitles] == [
        (1, "mov_text", "eng", False),
        (3, "ass", "", True),
    ]


def test_a_record_from_before_these_fields_still_reads() -> None:
    old = {
        "format_name": "mov",
        "duration": 1.0,
        "size_bytes": 1,
        "bit_rate": 1,
        "video": {"codec": "h264", "width": 2, "height": 2, "fps": 30.0, "pix_fmt": "yuv420p", "rotation": 0},
        "audio": {"codec": "aac", "channels": 2, "sample_rate": 48000},
        "stream_count": 2,
    }
    info = MediaInfo.from_record(old)
    assert info.video is not None and info.video.sample_aspect_ratio == "1:1"
    assert info.audio_tracks == () and info.subtitles == ()


def test_unknown_properties_are_not_declared() -> None:
    info = parse_probe(probed(video_stream(field_order="unknown", color_transfer="unspecified")))
    assert info.video is not None
    assert (info.video.field_order, info.video.color_transfer) == ("", "")


def test_an_mp4_starting_at_ten_seconds_lasts_as_long_as_its_streams() -> None:
    """MP4's duration counts from zero: streams from 10 s to 23 s play for 13 s, not 23."""
    fmt = {"duration": "23.000000", "start_time": "9.978000"}
    streams = [
        {"codec_type": "video", "start_time": "10.000000", "duration": "13.000000"},
        {"codec_type": "audio", "start_time": "9.978000", "duration": "13.021333"},
    ]
    assert content_seconds(fmt, streams) == pytest.approx(13.022)


def test_streams_without_durations_leave_the_containers_word() -> None:
    streams = [{"codec_type": "video", "start_time": "0.000000"}, {"codec_type": "audio"}]
    assert content_seconds({"duration": "61.5"}, streams) == 61.5


def test_a_container_that_understates_is_held_to_its_streams() -> None:
    streams = [{"codec_type": "video", "start_time": "0", "duration": "13"}]
    assert content_seconds({"duration": "8"}, streams) == 13


def test_a_container_that_overstates_is_held_to_its_streams_and_cover_art_does_not_count() -> None:
    streams = [
        {"codec_type": "video", "start_time": "0", "duration": "30", "disposition": {"attached_pic": 1}},
        {"codec_type": "video", "start_time": "0", "duration": "12.5"},
    ]
    assert content_seconds({"duration": "40"}, streams) == 12.5


def test_a_file_is_read_as_a_file_and_a_url_only_over_its_own_scheme() -> None:
    assert input_protocols(Path("/scratch/source")) == ["-protocol_whitelist", "file"]
    http = input_protocols("http://127.0.0.1:8333/work/jobs/x/source/clip.mp4?X-Amz-Signature=s")
    https = input_protocols("https://s3.example/work/clip.mp4")
    assert http[:2] == ["-protocol_whitelist", "http,tcp"]
    assert https[:2] == ["-protocol_whitelist", "https,tls,tcp"]
    assert "-rw_timeout" in http and "-rw_timeout" in https  # a stalled store ends in an error
    with pytest.raises(ValueError, match="'ftp'"):
        input_protocols("ftp://elsewhere/clip.mp4")


@pytest.mark.parametrize(
    "stderr",
    [
        "[tcp @ 0x1] Connection to tcp://127.0.0.1:9 failed: Connection refused\n"
        "the source: Connection refused",
        "[http @ 0x1] HTTP error 503 Service Unavailable\nthe source: Server returned 5XX Server Error reply",
        "the source: Connection timed out",
    ],
)
def test_a_store_that_does_not_answer_is_transient_and_a_bad_file_is_not(stderr: str) -> None:
    failure = probe_failure(stderr, remote=True)
    assert isinstance(failure, StorageFailed) and failure.transient
    assert "workspace" in str(failure)
    # The same words from a local file are the file's: nothing was fetched.
    assert isinstance(probe_failure(stderr, remote=False), InvalidMedia)


def test_a_bad_file_behind_a_url_is_invalid_media() -> None:
    failure = probe_failure("the source: Invalid data found when processing input", remote=True)
    assert isinstance(failure, InvalidMedia) and not failure.transient
    refused = probe_failure("[hls @ 0x1] Format not on whitelist 'mov,mp4'", remote=True)
    assert isinstance(refused, InvalidMedia) and "'hls'" in str(refused)
