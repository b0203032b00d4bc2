from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import m3u8
import pytest

from services.errors import InvalidMedia
from services.media.ffmpeg import Encoders, build_hls_command, ffmpeg_failure, scaling_parents
from services.media.ladder import Rendition, plan_audio, plan_ladder, plan_subtitles
from services.media.parts import PartWindow
from services.media.pictures import PicturePlan
from services.media.playlists import (
    Bitrates,
    SubtitleEntry,
    codecs_attribute,
    h264_level,
    hevc_level,
    measure_bitrates,
    parse_media_playlist,
    referenced_uris,
    video_codec,
    write_master_playlist,
)
from services.media.probe import AudioStream, MediaInfo, SubtitleStream, VideoStream
from services.media.storyboard import plan_storyboard

SOURCE = Path("/work/jobs/j1/source.mp4")
OUT = Path("/work/jobs/j1/hls")
SDR = PicturePlan(deinterlace=False, tone_map=None, bt601=False)


def media(
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    *,
    audio: bool = True,
    video: bool = True,
    vfr: bool = False,
    fmt: str = "mov,mp4",
    video_index: int = 0,
    tracks: tuple[AudioStream, ...] | None = None,
    subtitles: tuple[SubtitleStream, ...] = (),
) -> MediaInfo:
    # bit_rate 0: nothing caps the ladder unless a test says so.
    main = AudioStream("aac", 2, 48_000, index=video_index + 1)
    sound = (tracks if tracks is not None else (main,)) if audio else ()
    return MediaInfo(
        format_name=fmt,
        duration=10.0,
        size_bytes=1_000_000,
        bit_rate=0,
        video=VideoStream("h264", width, height, fps, "yuv420p", 0, vfr, index=video_index)
        if video
        else None,
        audio=sound[0] if sound else None,
        stream_count=len(sound) + (1 if video else 0) + len(subtitles),
        audio_tracks=sound,
        subtitles=subtitles,
    )


def command(
    info: MediaInfo,
    renditions: list[Rendition] | None = None,
    seg: int = 4,
    picture: PicturePlan = SDR,
    **kwargs: object,
) -> list[str]:
    planned = plan_ladder(info) if renditions is None else renditions
    return build_hls_command(
        SOURCE, info, planned, OUT, segment_seconds=seg, audio=plan_audio(info), picture=picture, **kwargs
    )  # type: ignore[arg-type]


def value_of(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def maps(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "-map"]


def test_input_is_locked_down_and_read_once() -> None:
    args = command(media(), encoders=Encoders(ffmpeg="/opt/ffmpeg"))
    assert args[0] == "/opt/ffmpeg"
    assert args.count("-i") == 1
    assert value_of(args, "-i") == str(SOURCE)
    assert value_of(args, "-protocol_whitelist") == "file"
    # The demuxer the probe accepted is forced, so ffmpeg cannot guess another one.
    assert args[1 : args.index("-i")] == ["-f", "mov", "-protocol_whitelist", "file"]
    for flag in ("-nostdin", "-hide_banner", "-y", "-nostats"):
        assert flag in args
    assert value_of(args, "-progress") == "pipe:1"
    assert value_of(args, "-loglevel") == "error"


def test_one_decode_scaled_once_to_the_top_and_cascaded_below() -> None:
    graph = value_of(command(media()), "-filter_complex")
    assert graph.split(";") == [
        "[0:0]scale=1280:720[s0]",
        "[s0]setsar=1[s1]",
        "[s1]format=yuv420p[s2]",
        "[s2]setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv[s3]",
        "[s3]split=2[s4][s5]",
        "[s5]scale=854:480[s6]",
        "[s6]setsar=1[s7]",
        "[s7]split=2[s8][s9]",
        "[s9]scale=640:360[s10]",
        "[s10]setsar=1[s11]",
        "[s11]split=2[s12][s13]",
        "[s13]scale=426:240[s14]",
        "[s14]setsar=1[s15]",
    ]
    assert "fps=" not in graph  # 30 fps source: nothing to drop


def test_a_single_rendition_needs_no_split() -> None:
    graph = value_of(command(media(320, 240)), "-filter_complex")
    assert graph == (
        "[0:0]scale=320:240[s0];[s0]setsar=1[s1];[s1]format=yuv420p[s2];"
        "[s2]setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv[s3]"
    )


def test_the_main_video_is_taken_by_its_index_so_cover_art_first_is_skipped() -> None:
    args = command(media(video_index=1))
    assert value_of(args, "-filter_complex").startswith("[0:1]scale=")
    assert not any("0:v:0" in a for a in args)
    assert "0:2" in maps(args)  # the sound, by index too


def test_frame_rate_is_reduced_only_where_the_rendition_is_slower() -> None:
    args = command(media(1920, 1080, fps=60.0))
    graph = value_of(args, "-filter_complex")
    assert graph.startswith("[0:0]scale=1920:1080[s0]")
    # 720p keeps 60; 480p drops to 30 once, and 360p and 240p are scaled from its frames.
    assert graph.count("fps=") == 1
    assert "[s7]split=2[s8][s9];[s9]fps=30[s10];[s10]scale=854:480" in graph  # [s7]: 720p60
    assert value_of(args, "-g:v:0") == "120"  # 30 fps x 4 s
    assert value_of(args, "-g:v:3") == "240"  # 60 fps x 4 s
    assert value_of(args, "-keyint_min:v:3") == "240"


def test_each_size_is_scaled_from_the_next_larger_one_on_its_frame_grid() -> None:
    top, p720, p480, p360 = (1920, 1080, 60.0), (1280, 720, 60.0), (854, 480, 30.0), (640, 360, 30.0)
    assert scaling_parents([top, p720, p480, p360]) == {p720: top, p480: p720, p360: p480}
    # A 24 fps rung never takes its frames from a 30 fps one made out of a 60 fps top.
    p240 = (426, 240, 24.0)
    assert scaling_parents([top, p720, p480, p240])[p240] == p720


@pytest.mark.parametrize("seg", [2, 4, 6])
def test_keyframes_are_forced_on_the_segment_boundary(seg: int) -> None:
    args = command(media(), seg=seg)
    assert value_of(args, "-force_key_frames") == f"expr:gte(t,n_forced*{seg})"
    assert value_of(args, "-sc_threshold") == "0"
    assert value_of(args, "-hls_time") == str(seg)
    assert value_of(args, "-g:v:0") == str(30 * seg)


def test_bitrate_mode_sets_rates_per_rendition() -> None:
    planned = plan_ladder(media(), rate_control="bitrate")
    args = command(media(), planned)
    for i, rendition in enumerate(planned):
        assert value_of(args, f"-c:v:{i}") == "libx264"
        assert value_of(args, f"-b:v:{i}") == str(rendition.video_bitrate)
        assert value_of(args, f"-maxrate:v:{i}") == str(rendition.maxrate)
        assert value_of(args, f"-bufsize:v:{i}") == str(rendition.bufsize)
        assert value_of(args, f"-profile:v:{i}") == "high"
        assert f"-crf:v:{i}" not in args


def test_capped_crf_sets_a_quality_target_under_each_rungs_ceiling() -> None:
    planned = plan_ladder(media(), rate_control="capped_crf")
    args = command(media(), planned)
    for i, rendition in enumerate(planned):
        assert value_of(args, f"-crf:v:{i}") == "23"
        assert value_of(args, f"-maxrate:v:{i}") == str(rendition.maxrate)
        assert value_of(args, f"-bufsize:v:{i}") == str(rendition.bufsize)
        assert f"-b:v:{i}" not in args


def test_sound_is_encoded_once_per_track_as_its_own_variant() -> None:
    english = AudioStream("aac", 6, 44_100, index=1, language="eng", default=True)
    french = AudioStream("ac3", 2, 48_000, index=2, language="fre")
    args = command(media(tracks=(english, french)))
    assert value_of(args, "-var_stream_map") == (
        "v:0,name:240p v:1,name:360p v:2,name:480p v:3,name:720p a:0,name:audio-0 a:1,name:audio-1"
    )
    assert [m for m in maps(args) if not m.startswith("[")] == ["0:1", "0:2"]
    for k in (0, 1):
        assert value_of(args, f"-c:a:{k}") == "aac"
        assert value_of(args, f"-ar:a:{k}") == "48000"
        assert value_of(args, f"-ac:a:{k}") == "2"
        assert value_of(args, f"-b:a:{k}") == "128000"
    assert "-ac" not in args and "-c:a" not in args  # no option that would reach every stream


def test_no_audio_track_maps_no_audio() -> None:
    args = command(media(854, 480, audio=False))
    assert value_of(args, "-var_stream_map") == "v:0,name:240p v:1,name:360p v:2,name:480p"
    assert not any(a.startswith(("-c:a", "-b:a")) for a in args)


def test_every_rendition_is_tagged_bt709_once_at_the_top_and_inherits_it_below() -> None:
    graph = value_of(command(media()), "-filter_complex")
    assert graph.count("setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv") == 1
    assert graph.index("setparams") < graph.index("split")


def test_hdr_is_tone_mapped_before_scaling() -> None:
    graph = value_of(command(media(), picture=PicturePlan(False, "smpte2084", False)), "-filter_complex")
    assert graph.startswith("[0:0]zscale=min=bt2020nc:npl=100:pin=bt2020:t=linear:tin=smpte2084[s0]")
    steps = [step.split("]")[1].split("=")[0] for step in graph.split(";")]
    assert steps[:6] == ["zscale", "format", "zscale", "tonemap", "zscale", "scale"]
    assert "zscale=m=bt709:r=tv:t=bt709" in graph
    hlg = value_of(command(media(), picture=PicturePlan(False, "arib-std-b67", False)), "-filter_complex")
    assert "tin=arib-std-b67" in hlg


def test_interlaced_sources_are_deinterlaced_first() -> None:
    graph = value_of(command(media(), picture=PicturePlan(True, None, False)), "-filter_complex")
    assert graph.startswith("[0:0]bwdif=deint=all:mode=send_frame:parity=auto[s0];[s0]scale=1280:720")
    assert "bwdif" not in value_of(command(media()), "-filter_complex")


def test_a_bt601_source_is_converted_while_scaling_to_the_top_only() -> None:
    graph = value_of(command(media(720, 576), picture=PicturePlan(False, None, True)), "-filter_complex")
    assert "scale=1024:576:in_color_matrix=bt601:out_color_matrix=bt709" not in graph  # 720 wide coded
    assert graph.count("out_color_matrix=bt709") == 1


def test_subtitle_tracks_are_written_whole_as_webvtt() -> None:
    text = (SubtitleStream("mov_text", 2, "eng"), SubtitleStream("subrip", 3, "fre"))
    info = media(subtitles=text)
    args = build_hls_command(
        SOURCE, info, plan_ladder(info), OUT, segment_seconds=4, subtitles=plan_subtitles(info)
    )
    for index, name in ((2, "text-0"), (3, "text-1")):
        path = args.index(str(OUT / name / "source.vtt"))
        assert args[path - 6 : path] == ["-map", f"0:{index}", "-f", "webvtt", "-c:s", "webvtt"]


def test_hevc_renditions_are_tagged_hvc1_for_safari() -> None:
    planned = plan_ladder(media(), codecs=("h264", "hevc"), rate_control="capped_crf")
    args = command(media(), planned, segment_format="fmp4")
    names = [r.name for r in planned]
    assert names == ["240p", "360p", "480p", "720p", "240p-hevc", "360p-hevc", "480p-hevc", "720p-hevc"]
    i = names.index("720p-hevc")
    assert value_of(args, f"-c:v:{i}") == "libx265"
    assert value_of(args, f"-tag:v:{i}") == "hvc1"
    assert value_of(args, f"-crf:v:{i}") == "25"
    assert value_of(args, f"-x265-params:v:{i}") == "scenecut=0:open-gop=0:log-level=error:level-idc=3.1"
    assert value_of(args, f"-profile:v:{i}") == "main"
    # Both codecs at one size share one scaled picture.
    assert value_of(args, "-filter_complex").count("scale=640:360") == 1


def test_av1_renditions_use_svt_av1_at_their_bit_rate() -> None:
    planned = plan_ladder(media(), codecs=("av1",), rate_control="capped_crf")
    args = command(media(), planned, segment_format="fmp4", encoders=Encoders(svtav1_preset=8))
    for i, rendition in enumerate(planned):
        assert value_of(args, f"-c:v:{i}") == "libsvtav1"
        assert value_of(args, f"-preset:v:{i}") == "8"
        assert value_of(args, f"-b:v:{i}") == str(rendition.video_bitrate)


def test_hls_output_layout() -> None:
    args = command(media())
    assert args[args.index("-map") :].count("-f") >= 1
    assert value_of(args, "-hls_playlist_type") == "vod"
    assert value_of(args, "-hls_flags") == "independent_segments"
    assert value_of(args, "-master_pl_name") == "master.m3u8"
    assert value_of(args, "-hls_segment_filename") == str(OUT / "%v" / "seg_%05d.ts")
    hls = args.index(str(OUT / "%v" / "index.m3u8"))
    assert "hls" in args[:hls] and args[args.index("hls") - 1] == "-f"


def test_threads_only_when_asked() -> None:
    assert "-threads" not in command(media())
    assert value_of(command(media(), encoders=Encoders(threads=3)), "-threads") == "3"


@pytest.mark.parametrize("fmt", ["hls", "concat", "dash", "lavfi"])
def test_playlist_sources_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidMedia):
        command(media(fmt=fmt))


def test_empty_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        build_hls_command(SOURCE, media(), [], OUT, segment_seconds=4)


def test_variable_rate_source_is_made_constant_in_every_rendition() -> None:
    info = media(1280, 720, fps=29.6, vfr=True)
    graph = value_of(command(info), "-filter_complex")
    # Made constant once, at the top; the lower renditions inherit the constant rate.
    assert graph.startswith("[0:0]fps=30[s0];[s0]scale=1280:720")
    assert graph.count("fps=") == 1


def test_ten_bit_source_is_encoded_as_8_bit_high_profile_h264() -> None:
    info = MediaInfo(
        "matroska,webm", 10.0, 1, 1, VideoStream("vp9", 1280, 720, 30.0, "yuv420p10le", 0), None, 1
    )
    args = command(info)
    assert args[1:3] == ["-f", "matroska"]
    assert "format=yuv420p" in value_of(args, "-filter_complex")
    assert value_of(args, "-profile:v:0") == "high"
    assert value_of(args, "-c:v:0") == "libx264"


def test_fmp4_segments_with_an_init_section() -> None:
    args = command(media(), segment_format="fmp4")
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
    args = build_hls_command(SOURCE, info, [], OUT, segment_seconds=4, audio=plan_audio(info))
    assert "-filter_complex" not in args
    assert maps(args) == ["0:1"]
    assert value_of(args, "-c:a:0") == "aac"
    assert value_of(args, "-b:a:0") == "128000"
    assert value_of(args, "-ac:a:0") == "2"
    assert value_of(args, "-var_stream_map") == "a:0,name:audio-0"
    assert not any(a.startswith(("-c:v", "-b:v", "-g", "-color")) for a in args)


def test_audio_plan_needs_audio_and_a_video_plan_needs_video() -> None:
    with pytest.raises(InvalidMedia):
        build_hls_command(SOURCE, media(audio=False), [], OUT, segment_seconds=4, audio=plan_audio(media()))
    with pytest.raises(InvalidMedia):
        build_hls_command(SOURCE, media(video=False), plan_ladder(media()), OUT, segment_seconds=4)


def test_poster_and_storyboard_come_from_the_same_decode() -> None:
    info = media()
    board = plan_storyboard(10.0, 1280, 720, interval=2.0, tile_width=160, columns=10)
    args = command(info, storyboard=board)
    assert args.count("-i") == 1
    graph = value_of(args, "-filter_complex")
    assert graph.startswith("[0:0]split=3[s0][s1][s2]")
    assert "trim=start=1.000" in graph and "select=eq(n\\,0)" in graph
    assert "select=lt(selected_n\\,5)*gte(t\\,selected_n*2)" in graph
    assert "tile=5x1:nb_frames=5" in graph
    poster = args.index(str(OUT / "poster.jpg"))
    assert args[poster - 8 : poster] == ["-f", "image2", "-c:v", "mjpeg", "-q:v", "3", "-update", "1"]
    sprite = args.index(str(OUT / "storyboard.jpg"))
    assert args[sprite - 8 : sprite] == ["-f", "image2", "-c:v", "mjpeg", "-q:v", "3", "-update", "1"]
    # Encoder options before the HLS output's name belong to it alone.
    assert args.index("-profile:v:0") < args.index(str(OUT / "%v" / "index.m3u8")) < poster


def test_level_follows_size_and_frame_rate() -> None:
    by_name = {r.name: r for r in plan_ladder(media(1920, 1080, fps=60.0), codecs=("h264", "hevc", "av1"))}
    assert h264_level(by_name["240p"]) == 30
    assert h264_level(by_name["720p"]) == 32
    assert h264_level(by_name["1080p"]) == 42
    assert codecs_attribute(by_name["1080p"], has_audio=True) == "avc1.64002a,mp4a.40.2"
    assert codecs_attribute(by_name["240p"], has_audio=False) == "avc1.64001e"
    assert hevc_level(by_name["1080p-hevc"]) == 123  # 1080p60 is level 4.1
    assert video_codec(by_name["1080p-hevc"]) == "hvc1.1.6.L123.B0"
    assert video_codec(by_name["720p-hevc"]) == "hvc1.1.6.L120.B0"
    assert video_codec(by_name["1080p-av1"]) == "av01.0.09M.08"
    assert video_codec(by_name["240p-av1"]) == "av01.0.00M.08"


def measured(renditions: list[Rendition]) -> list[Bitrates]:
    return [Bitrates(peak=r.maxrate + 50_000, average=r.maxrate - 50_000) for r in renditions]


def audio_info() -> MediaInfo:
    english = AudioStream("aac", 2, 48_000, index=1, language="eng", default=True)
    french = AudioStream("aac", 2, 48_000, index=2, language="fre", title="Français")
    return media(tracks=(english, french))


def test_master_playlist_declares_every_variant_with_measured_rates_and_sound() -> None:
    info = audio_info()
    planned = plan_ladder(info)
    rates = measured(planned)
    sound = [(track, Bitrates(140_000, 130_000 + k)) for k, track in enumerate(plan_audio(info))]
    text = write_master_playlist(planned, rates, audio=sound)
    master = m3u8.loads(text)
    assert master.is_variant
    assert [p.uri for p in master.playlists] == [
        "240p/index.m3u8",
        "360p/index.m3u8",
        "480p/index.m3u8",
        "720p/index.m3u8",
    ]
    for playlist, rendition, rate in zip(master.playlists, planned, rates, strict=True):
        stream = playlist.stream_info
        assert stream.resolution == (rendition.width, rendition.height)
        # The variant with the audio rendition it refers to: the peak with the loudest track's,
        # the average with the default's.
        assert (stream.bandwidth, stream.average_bandwidth) == (rate.peak + 140_000, rate.average + 130_000)
        assert stream.frame_rate == rendition.fps
        assert stream.codecs.endswith(",mp4a.40.2")
        assert stream.audio == "audio"
    english, french = master.media
    assert (english.type, english.group_id, english.language, english.name) == (
        "AUDIO",
        "audio",
        "en",
        "English",
    )
    assert (english.default, english.autoselect, english.uri) == ("YES", "YES", "audio-0/index.m3u8")
    assert (french.language, french.name, french.default, french.uri) == (
        "fr",
        "Français",
        "NO",
        "audio-1/index.m3u8",
    )
    assert master.version == 3


def test_master_lists_subtitles_in_one_group() -> None:
    info = audio_info()
    planned = plan_ladder(info)
    sound = [(track, Bitrates(140_000, 130_000)) for track in plan_audio(info)]
    entries = [
        SubtitleEntry("en", "English", "text-0/index.m3u8", default=True),
        SubtitleEntry("fr", "English", "text-1/index.m3u8", forced=True),
    ]
    master = m3u8.loads(write_master_playlist(planned, measured(planned), audio=sound, subtitles=entries))
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert [(m.language, m.name, m.default, m.forced, m.uri) for m in subs] == [
        ("en", "English", "YES", None, "text-0/index.m3u8"),
        ("fr", "English (2)", "NO", "YES", "text-1/index.m3u8"),  # NAME is unique in a group
    ]
    assert all(p.stream_info.subtitles == "subs" for p in master.playlists)


def test_hevc_variants_say_hvc1_in_codecs() -> None:
    planned = plan_ladder(media(), codecs=("hevc",))
    master = m3u8.loads(write_master_playlist(planned, measured(planned), fmp4=True))
    assert [p.stream_info.codecs for p in master.playlists] == [
        "hvc1.1.6.L60.B0",
        "hvc1.1.6.L63.B0",
        "hvc1.1.6.L90.B0",
        "hvc1.1.6.L93.B0",
    ]


def test_master_for_fmp4_is_version_7() -> None:
    planned = plan_ladder(media())
    assert m3u8.loads(write_master_playlist(planned, measured(planned), fmp4=True)).version == 7


def test_audio_only_master_plays_its_default_track() -> None:
    info = audio_info()
    info = replace(info, video=None)
    sound = [(track, Bitrates(140_000, 135_000)) for track in plan_audio(info)]
    text = write_master_playlist([], [], audio=sound)
    master = m3u8.loads(text)
    (variant,) = master.playlists
    assert variant.uri == "audio-0/index.m3u8"
    assert variant.stream_info.codecs == "mp4a.40.2"
    assert variant.stream_info.bandwidth == 140_000
    assert variant.stream_info.audio == "audio"
    assert variant.stream_info.resolution is None
    assert "FRAME-RATE" not in text
    assert [m.language for m in master.media] == ["en", "fr"]


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


def test_a_kill_is_transient_and_a_crash_is_not() -> None:
    killed = ffmpeg_failure(-9, ["Killed"])
    assert killed.code == "transcode_failed" and killed.transient
    crashed = ffmpeg_failure(-11, [])
    assert crashed.code == "transcode_failed" and not crashed.transient
    assert "SIGSEGV" in crashed.message
    assert not ffmpeg_failure(1, ["Invalid data found when processing input"]).transient


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


PART = PartWindow(start=4.0, end=8.0, seek=3.0, read_seconds=7.0, first_segment=2)


def test_a_part_reads_from_before_its_start_and_keeps_exactly_its_window() -> None:
    args = command(media(640, 360), window=PART)
    before_input = args[: args.index("-i")]
    # A fast seek a second early (the frames at the start decode whole), reading a little
    # past the end: decode order runs behind presentation order.
    assert value_of(before_input, "-ss") == "3.000000" and value_of(before_input, "-t") == "7.000000"
    assert "-noaccurate_seek" in before_input
    graph = value_of(args, "-filter_complex")
    assert graph.startswith("[0:0]trim=end=8.000000:start=4.000000[s0];")
    assert graph.count("trim=") == 1  # before the split: every rendition keeps the same frames
    # The source's clock throughout, so every part's timestamps and segment numbers go on
    # from the part before.
    assert "-copyts" in args
    assert value_of(args, "-start_number") == "2"
    assert value_of(args, "-force_key_frames") == "expr:gte(t,4.000000+n_forced*4)"
    assert value_of(args, "-output_ts_offset") == "10"


def test_a_whole_transcode_has_no_window() -> None:
    args = command(media(640, 360))
    for flag in ("-ss", "-t", "-noaccurate_seek", "-copyts", "-start_number", "-output_ts_offset"):
        assert flag not in args
    assert "trim" not in value_of(args, "-filter_complex")


def test_a_variable_rate_part_keeps_its_window_after_the_rate_change() -> None:
    """fps puts frames on a grid of the source's own clock, the same grid in every part; the
    trim after it gives each grid instant to exactly one part."""
    graph = value_of(command(media(640, 360, vfr=True), window=PART), "-filter_complex")
    first = graph.split(";")[0]
    assert first.startswith("[0:0]fps=") and "trim" not in first
    assert graph.index("fps=") < graph.index("trim=end=8.000000:start=4.000000")


def test_the_last_part_runs_to_the_end_of_the_stream() -> None:
    last = PartWindow(start=8.0, end=None, seek=7.0, read_seconds=None, first_segment=4)
    args = command(media(640, 360), window=last)
    assert "-t" not in args[: args.index("-i")]
    assert "trim=start=8.000000[s0]" in value_of(args, "-filter_complex")
