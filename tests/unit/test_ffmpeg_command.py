from __future__ import annotations

from pathlib import Path

import m3u8
import pytest

from services.errors import InvalidMedia
from services.ffmpeg import build_hls_command, codecs_attribute, h264_level, write_master_playlist
from services.ladder import Rendition, plan_ladder
from services.probe import AudioStream, MediaInfo, VideoStream

SOURCE = Path("/work/jobs/j1/source.mp4")
OUT = Path("/work/jobs/j1/hls")


def media(
    width: int = 1280, height: int = 720, fps: float = 30.0, *, audio: bool = True, fmt: str = "mov,mp4"
) -> MediaInfo:
    return MediaInfo(
        format_name=fmt,
        duration=10.0,
        size_bytes=1_000_000,
        bit_rate=800_000,
        video=VideoStream("h264", width, height, fps, "yuv420p", 0),
        audio=AudioStream("aac", 2, 48_000) if audio else None,
        stream_count=2 if audio else 1,
    )


def command(info: MediaInfo, renditions: list[Rendition] | None = None, seg: int = 4) -> list[str]:
    planned = plan_ladder(info) if renditions is None else renditions
    return build_hls_command(SOURCE, info, planned, OUT, segment_seconds=seg)


def value_of(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_input_is_locked_down_and_read_once() -> None:
    args = command(media())
    assert args[0] == "ffmpeg"
    assert args.count("-i") == 1
    assert value_of(args, "-i") == str(SOURCE)
    assert value_of(args, "-protocol_whitelist") == "file"
    assert args.index("-protocol_whitelist") < args.index("-i")
    for flag in ("-nostdin", "-hide_banner", "-y", "-nostats"):
        assert args.index(flag) < args.index("-i")
    assert value_of(args, "-progress") == "pipe:1"
    assert value_of(args, "-loglevel") == "error"


def test_one_decode_split_into_every_rendition() -> None:
    graph = value_of(command(media()), "-filter_complex")
    assert graph.startswith("[0:v:0]split=4[s0][s1][s2][s3];")
    for size in ("426:240", "640:360", "854:480", "1280:720"):
        assert f"scale={size},setsar=1,format=yuv420p" in graph
    assert "fps=" not in graph  # 30 fps source: nothing to drop


def test_frame_rate_is_reduced_only_where_the_rendition_is_slower() -> None:
    args = command(media(1920, 1080, fps=60.0))
    graph = value_of(args, "-filter_complex")
    assert "[s0]fps=30,scale=426:240" in graph
    assert "[s3]scale=1280:720" in graph  # 720p keeps 60
    assert value_of(args, "-g:v:0") == "120"  # 30 fps x 4 s
    assert value_of(args, "-g:v:3") == "240"  # 60 fps x 4 s
    assert value_of(args, "-keyint_min:v:3") == "240"


@pytest.mark.parametrize("seg", [2, 4, 6])
def test_keyframes_are_forced_on_the_segment_boundary(seg: int) -> None:
    args = command(media(), seg=seg)
    assert value_of(args, "-force_key_frames") == f"expr:gte(t,n_forced*{seg})"
    assert value_of(args, "-sc_threshold") == "0"
    assert value_of(args, "-hls_time") == str(seg)
    assert value_of(args, "-g:v:0") == str(30 * seg)


def test_per_rendition_rates() -> None:
    planned = plan_ladder(media())
    args = command(media(), planned)
    for i, rendition in enumerate(planned):
        assert value_of(args, f"-c:v:{i}") == "libx264"
        assert value_of(args, f"-b:v:{i}") == str(rendition.video_bitrate)
        assert value_of(args, f"-maxrate:v:{i}") == str(rendition.maxrate)
        assert value_of(args, f"-bufsize:v:{i}") == str(rendition.bufsize)
        assert value_of(args, f"-b:a:{i}") == str(rendition.audio_bitrate)
    assert value_of(args, "-profile:v") == "high"


def test_var_stream_map_with_audio_maps_the_audio_once_per_variant() -> None:
    args = command(media())
    assert value_of(args, "-var_stream_map") == (
        "v:0,a:0,name:240p v:1,a:1,name:360p v:2,a:2,name:480p v:3,a:3,name:720p"
    )
    assert [args[i + 1] for i, a in enumerate(args) if a == "-map"].count("0:a:0") == 4


def test_var_stream_map_without_audio_has_no_audio() -> None:
    args = command(media(854, 480, audio=False))
    assert value_of(args, "-var_stream_map") == "v:0,name:240p v:1,name:360p v:2,name:480p"
    assert "0:a:0" not in args
    assert not any(a.startswith("-c:a") for a in args)


def test_hls_output_layout() -> None:
    args = command(media())
    assert value_of(args, "-f") == "hls"
    assert value_of(args, "-hls_playlist_type") == "vod"
    assert value_of(args, "-hls_flags") == "independent_segments"
    assert value_of(args, "-master_pl_name") == "master.m3u8"
    assert value_of(args, "-hls_segment_filename") == str(OUT / "%v" / "seg_%05d.ts")
    assert args[-1] == str(OUT / "%v" / "index.m3u8")


def test_threads_only_when_asked() -> None:
    info = media()
    assert "-threads" not in command(info)
    args = build_hls_command(SOURCE, info, plan_ladder(info), OUT, segment_seconds=4, threads=3)
    assert value_of(args, "-threads") == "3"


def test_playlist_sources_and_empty_plans_are_refused() -> None:
    with pytest.raises(InvalidMedia):
        command(media(fmt="hls"))
    with pytest.raises(ValueError):
        command(media(), renditions=[])


def test_level_follows_size_and_frame_rate() -> None:
    by_name = {r.name: r for r in plan_ladder(media(1920, 1080, fps=60.0))}
    assert h264_level(by_name["240p"]) == 30
    assert h264_level(by_name["720p"]) == 32
    assert h264_level(by_name["1080p"]) == 42
    assert codecs_attribute(by_name["1080p"], has_audio=True) == "avc1.64002a,mp4a.40.2"
    assert codecs_attribute(by_name["240p"], has_audio=False) == "avc1.64001e"


def test_master_playlist_declares_every_variant() -> None:
    planned = plan_ladder(media())
    master = m3u8.loads(write_master_playlist(planned, has_audio=True))
    assert master.is_variant
    assert [p.uri for p in master.playlists] == [
        "240p/index.m3u8",
        "360p/index.m3u8",
        "480p/index.m3u8",
        "720p/index.m3u8",
    ]
    for playlist, rendition in zip(master.playlists, planned, strict=True):
        info = playlist.stream_info
        assert info.resolution == (rendition.width, rendition.height)
        assert info.bandwidth >= rendition.bandwidth
        assert info.average_bandwidth < info.bandwidth
        assert info.frame_rate == rendition.fps
        assert info.codecs.endswith(",mp4a.40.2")
