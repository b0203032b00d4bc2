from __future__ import annotations

from pathlib import Path

import m3u8
import pytest

from services.errors import InvalidMedia
from services.ffmpeg import build_hls_command
from services.ladder import AUDIO_ONLY, Rendition, plan_ladder
from services.playlists import (
    Bitrates,
    codecs_attribute,
    h264_level,
    measure_bitrates,
    parse_media_playlist,
    referenced_uris,
    write_master_playlist,
)
from services.probe import AudioStream, MediaInfo, VideoStream
from services.storyboard import plan_storyboard

SOURCE = Path("/work/jobs/j1/source.mp4")
OUT = Path("/work/jobs/j1/hls")


def media(
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    *,
    audio: bool = True,
    video: bool = True,
    vfr: bool = False,
    fmt: str = "mov,mp4",
) -> MediaInfo:
    return MediaInfo(
        format_name=fmt,
        duration=10.0,
        size_bytes=1_000_000,
        bit_rate=800_000,
        video=VideoStream("h264", width, height, fps, "yuv420p", 0, vfr) if video else None,
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
    # The demuxer the probe accepted is forced, so ffmpeg cannot guess another one.
    assert args[args.index("-i") - 2 : args.index("-i")] == ["-f", "mov"]


def test_one_decode_scaled_once_to_the_top_and_cascaded_below() -> None:
    graph = value_of(command(media()), "-filter_complex")
    assert graph.split(";") == [
        "[0:v:0]scale=1280:720,setsar=1,format=yuv420p,split=4[c0][c1][c2][v3]",
        "[c0]scale=426:240,setsar=1[v0]",
        "[c1]scale=640:360,setsar=1[v1]",
        "[c2]scale=854:480,setsar=1[v2]",
    ]
    assert "fps=" not in graph  # 30 fps source: nothing to drop


def test_a_single_rendition_needs_no_split() -> None:
    graph = value_of(command(media(320, 240)), "-filter_complex")
    assert graph == "[0:v:0]scale=320:240,setsar=1,format=yuv420p[v0]"


def test_frame_rate_is_reduced_only_where_the_rendition_is_slower() -> None:
    args = command(media(1920, 1080, fps=60.0))
    graph = value_of(args, "-filter_complex")
    assert graph.startswith("[0:v:0]scale=1920:1080,")
    assert "[c0]fps=30,scale=426:240" in graph
    assert "[c3]scale=1280:720" in graph  # 720p keeps 60
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
    assert args[args.index("-hls_time") - 2 : args.index("-hls_time")] == ["-f", "hls"]
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


@pytest.mark.parametrize("fmt", ["hls", "concat", "dash", "lavfi"])
def test_playlist_sources_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidMedia):
        command(media(fmt=fmt))


def test_empty_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        command(media(), renditions=[])


def test_variable_rate_source_is_made_constant_in_every_rendition() -> None:
    info = media(1280, 720, fps=29.6, vfr=True)
    graph = value_of(command(info), "-filter_complex")
    # Made constant once, at the top; the lower renditions inherit the constant rate.
    assert graph.startswith("[0:v:0]fps=30,scale=1280:720,")
    assert "[c0]scale=426:240" in graph


def test_ten_bit_source_is_encoded_as_8_bit_high_profile_h264() -> None:
    info = MediaInfo(
        "matroska,webm", 10.0, 1, 1, VideoStream("vp9", 1280, 720, 30.0, "yuv420p10le", 0), None, 1
    )
    args = command(info)
    assert value_of(args, "-f") == "matroska"
    assert "scale=1280:720,setsar=1,format=yuv420p," in value_of(args, "-filter_complex")
    assert value_of(args, "-profile:v") == "high"
    assert value_of(args, "-c:v:0") == "libx264"


def test_fmp4_segments_with_an_init_section() -> None:
    args = build_hls_command(
        SOURCE, media(), plan_ladder(media()), OUT, segment_seconds=4, segment_format="fmp4"
    )
    assert value_of(args, "-hls_segment_type") == "fmp4"
    assert value_of(args, "-hls_fmp4_init_filename") == "init_%v.mp4"
    assert value_of(args, "-hls_segment_filename") == str(OUT / "%v" / "seg_%05d.m4s")
    single = build_hls_command(
        SOURCE, media(), plan_ladder(media(), ["240p"]), OUT, segment_seconds=4, segment_format="fmp4"
    )
    assert value_of(single, "-hls_fmp4_init_filename") == "init.mp4"  # ffmpeg expands %v only for several


def test_mpegts_is_the_default() -> None:
    assert value_of(command(media()), "-hls_segment_type") == "mpegts"


def test_audio_only_maps_the_audio_alone() -> None:
    info = media(video=False, fmt="mp3")
    args = build_hls_command(SOURCE, info, [AUDIO_ONLY], OUT, segment_seconds=4)
    assert "-filter_complex" not in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "-map"] == ["0:a:0"]
    assert value_of(args, "-c:a:0") == "aac"
    assert value_of(args, "-b:a:0") == "128000"
    assert value_of(args, "-ac") == "2"
    assert value_of(args, "-var_stream_map") == "a:0,name:audio"
    assert not any(a.startswith(("-c:v", "-b:v", "-g")) for a in args)


def test_audio_only_plan_needs_audio_and_a_video_plan_needs_video() -> None:
    with pytest.raises(InvalidMedia):
        build_hls_command(SOURCE, media(audio=False), [AUDIO_ONLY], OUT, segment_seconds=4)
    with pytest.raises(InvalidMedia):
        build_hls_command(SOURCE, media(video=False), plan_ladder(media()), OUT, segment_seconds=4)


def test_poster_and_storyboard_come_from_the_same_decode() -> None:
    info = media()
    planned = plan_ladder(info)
    board = plan_storyboard(10.0, 1280, 720, interval=2.0, tile_width=160, columns=10)
    args = build_hls_command(SOURCE, info, planned, OUT, segment_seconds=4, storyboard=board)
    assert args.count("-i") == 1
    graph = value_of(args, "-filter_complex")
    assert graph.startswith("[0:v:0]split=3[top][p][b];[top]scale=1280:720,")
    assert "[p]trim=start=1.000,select=eq(n\\,0),scale=1280:720,setsar=1[poster]" in graph
    assert "tile=5x1:nb_frames=5[sprite]" in graph
    assert args[-1] == str(OUT / "storyboard.jpg")
    poster = args.index(str(OUT / "poster.jpg"))
    assert args[poster - 10 : poster] == [
        "-map",
        "[poster]",
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-update",
        "1",
        "-f",
        "image2",
    ]
    # Encoder options before the HLS output's name belong to it alone.
    assert args.index("-profile:v") < args.index(str(OUT / "%v" / "index.m3u8")) < poster


def test_level_follows_size_and_frame_rate() -> None:
    by_name = {r.name: r for r in plan_ladder(media(1920, 1080, fps=60.0))}
    assert h264_level(by_name["240p"]) == 30
    assert h264_level(by_name["720p"]) == 32
    assert h264_level(by_name["1080p"]) == 42
    assert codecs_attribute(by_name["1080p"], has_audio=True) == "avc1.64002a,mp4a.40.2"
    assert codecs_attribute(by_name["240p"], has_audio=False) == "avc1.64001e"


def measured(renditions: list[Rendition]) -> list[Bitrates]:
    return [Bitrates(peak=r.bandwidth + 50_000, average=r.bandwidth - 50_000) for r in renditions]


def test_master_playlist_declares_every_variant_with_measured_rates() -> None:
    planned = plan_ladder(media())
    rates = measured(planned)
    master = m3u8.loads(write_master_playlist(planned, True, rates))
    assert master.is_variant
    assert [p.uri for p in master.playlists] == [
        "240p/index.m3u8",
        "360p/index.m3u8",
        "480p/index.m3u8",
        "720p/index.m3u8",
    ]
    for playlist, rendition, rate in zip(master.playlists, planned, rates, strict=True):
        info = playlist.stream_info
        assert info.resolution == (rendition.width, rendition.height)
        assert (info.bandwidth, info.average_bandwidth) == (rate.peak, rate.average)
        assert info.frame_rate == rendition.fps
        assert info.codecs.endswith(",mp4a.40.2")
    assert master.version == 3


def test_master_for_fmp4_is_version_7() -> None:
    planned = plan_ladder(media())
    assert m3u8.loads(write_master_playlist(planned, True, measured(planned), fmp4=True)).version == 7


def test_audio_only_master_has_no_picture_attributes() -> None:
    text = write_master_playlist([AUDIO_ONLY], True, [Bitrates(140_000, 135_000)])
    (variant,) = m3u8.loads(text).playlists
    assert variant.uri == "audio/index.m3u8"
    assert variant.stream_info.codecs == "mp4a.40.2"
    assert variant.stream_info.bandwidth == 140_000
    assert variant.stream_info.resolution is None
    assert "FRAME-RATE" not in text


def test_peak_is_the_highest_run_lasting_half_to_one_and_a_half_targets() -> None:
    # Three 2 s segments at 1, 3 and 1 Mb/s, then a 0.2 s tail at 8 Mb/s.
    sizes = [(2.0, 250_000), (2.0, 750_000), (2.0, 250_000), (0.2, 200_000)]
    rates = measure_bitrates(sizes, target_duration=2.0)
    assert rates.peak == 3_000_000  # the tail alone is too short to count; 2.2 s with it is 2.9 Mb/s
    total_bits = 8 * sum(size for _, size in sizes)
    assert rates.average == -(-total_bits // 6.2)


def test_a_clip_shorter_than_half_a_target_uses_its_own_rate() -> None:
    assert measure_bitrates([(0.3, 30_000)], target_duration=2.0) == Bitrates(800_000, 800_000)
    with pytest.raises(ValueError):
        measure_bitrates([], target_duration=2.0)


def test_media_playlist_parsing() -> None:
    text = (
        '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI="init.mp4"\n'
        "#EXTINF:2.000000,\nseg_00000.m4s\n#EXTINF:0.500000,\nseg_00001.m4s\n#EXT-X-ENDLIST\n"
    )
    playlist = parse_media_playlist(text)
    assert playlist.target_duration == 2.0
    assert [(s.uri, s.duration) for s in playlist.segments] == [
        ("seg_00000.m4s", 2.0),
        ("seg_00001.m4s", 0.5),
    ]


def test_every_uri_a_playlist_names_is_found() -> None:
    fmp4 = (
        '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.0,\nseg_00000.m4s\n'
        "#EXTINF:2.0,\n  ../other/seg.m4s  \n#EXT-X-ENDLIST\n"
    )
    assert referenced_uris(fmp4) == ["init.mp4", "seg_00000.m4s", "../other/seg.m4s"]
    master = (
        '#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI="subtitles/en.m3u8"\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=1\n240p/index.m3u8\n"
    )
    assert referenced_uris(master) == ["subtitles/en.m3u8", "240p/index.m3u8"]
