"""The analysis log parser and result builder, on stderr captured from real ffmpeg 5.1 runs."""

# ruff: noqa: E501 -- the canned logs keep ffmpeg's long stream lines as printed.

from __future__ import annotations

from pathlib import Path

from services.analysis.local import AnalysisLog, build_analysis_command, build_result, parse_analysis_log
from services.media.probe import AudioStream, MediaInfo, VideoStream

# 1 s black then 2 s testsrc2; audio 1 s sine, 1 s silence, 1 s sine (the full stderr, so the
# parser is shown to ignore the stream listing around the figures).
BLACK_THEN_PICTURE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/tmp/an/a.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    encoder         : Lavf59.27.100
  Duration: 00:00:03.00, start: 0.000000, bitrate: 257 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 320x240 [SAR 1:1 DAR 4:3], 193 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      vendor_id       : [0][0][0][0]
      encoder         : Lavc59.37.100 libx264
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 50 kb/s (default)
    Metadata:
      handler_name    : SoundHandler
      vendor_id       : [0][0][0][0]
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
  Stream #0:1 -> #0:1 (aac (native) -> pcm_s16le (native))
Output #0, null, to 'pipe:':
  Stream #0:0(und): Video: wrapped_avframe, yuv420p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 200 kb/s, 30 fps, 30 tbn (default)
  Stream #0:1(und): Audio: pcm_s16le, 44100 Hz, mono, s16, 705 kb/s (default)
[blackdetect @ 0x55adbcd34cc0] black_start:0 black_end:1 black_duration:1
[scdet @ 0x55adbcd35d00] lavfi.scd.score: 41.450, lavfi.scd.time: 1
[silencedetect @ 0x55adbc7f4640] silence_start: 1
[silencedetect @ 0x55adbc7f4640] silence_end: 2.00002 | silence_duration: 1.00002
frame=   90 fps=0.0 q=-0.0 Lsize=N/A time=00:00:03.01 bitrate=N/A speed=47.6x
video:41kB audio:260kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_0 @ 0x55adbc85fcc0] Summary:

  Integrated loudness:
    I:         -22.5 LUFS
    Threshold: -32.7 LUFS

  Loudness range:
    LRA:        20.0 LU
    Threshold: -43.5 LUFS
    LRA low:   -43.5 LUFS
    LRA high:  -23.5 LUFS

  True peak:
    Peak:      -17.7 dBFS
"""

# Red then blue, audio 1 s sine then 2 s silence: silencedetect closes the last silence while
# flushing, just past the end of the file, and after the ebur128 summary.
SILENCE_PAST_THE_END = """\
[silencedetect @ 0x55f698c67c00] silence_start: 1
[scdet @ 0x55f69918fc40] lavfi.scd.score: 15.625, lavfi.scd.time: 1.5
frame=   90 fps=0.0 q=-0.0 Lsize=N/A time=00:00:03.01 bitrate=N/A speed=  65x
video:41kB audio:260kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_0 @ 0x55f698cb3640] Summary:

  Integrated loudness:
    I:         -22.5 LUFS
    Threshold: -32.9 LUFS

  Loudness range:
    LRA:        20.0 LU
    Threshold: -46.5 LUFS
    LRA low:   -46.5 LUFS
    LRA high:  -26.5 LUFS

  True peak:
    Peak:      -17.7 dBFS
[silencedetect @ 0x55f698c67c00] silence_end: 3.01859 | silence_duration: 2.01859
"""

# Silent stereo audio only: ebur128 floors loudness at -70 LUFS and prints a -inf peak.
SILENT_AUDIO = """\
[silencedetect @ 0x55c9a9c2ed40] silence_start: 0
size=N/A time=00:00:03.00 bitrate=N/A speed= 150x
video:0kB audio:564kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_0 @ 0x55c9a9c51440] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS
    LRA low:     0.0 LUFS
    LRA high:    0.0 LUFS

  True peak:
    Peak:       -inf dBFS
[silencedetect @ 0x55c9a9c2ed40] silence_end: 3.008 | silence_duration: 3.008
"""

# testsrc2 then black, no audio: blackdetect reports the last black frame's time, not the
# end of the file.
BLACK_TO_THE_END = """\
[scdet @ 0x5578b4d7ae00] lavfi.scd.score: 40.764, lavfi.scd.time: 1.5
[blackdetect @ 0x5578b4d79dc0] black_start:1.5 black_end:2.96667 black_duration:1.46667
"""


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def media(*, video: bool = True, audio: bool = True) -> MediaInfo:
    return MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=3.0,
        size_bytes=96433,
        bit_rate=257154,
        video=VideoStream(codec="h264", width=320, height=240, fps=30.0, pix_fmt="yuv420p", rotation=0)
        if video
        else None,
        audio=AudioStream(codec="aac", channels=1, sample_rate=44100) if audio else None,
        stream_count=int(video) + int(audio),
    )


def test_reads_every_figure_from_a_full_log() -> None:
    log = parse_analysis_log(lines(BLACK_THEN_PICTURE), duration=3.0, frame_seconds=1 / 30)
    assert log == AnalysisLog(
        integrated_lufs=-22.5,
        loudness_range_lu=20.0,
        true_peak_dbtp=-17.7,
        silences=[(1.0, 2.00002)],
        black_segments=[(0.0, 1.0)],
        scene_cuts=[(1.0, 41.45 / 100)],  # scdet scores in percent
    )


def test_a_silence_closed_past_the_end_ends_at_the_duration() -> None:
    log = parse_analysis_log(lines(SILENCE_PAST_THE_END), duration=3.0)
    assert log.silences == [(1.0, 3.0)]
    assert log.scene_cuts == [(1.5, 0.15625)]
    assert log.integrated_lufs == -22.5


def test_a_silence_never_closed_ends_at_the_duration() -> None:
    truncated = lines(SILENCE_PAST_THE_END)[:-1]
    assert parse_analysis_log(truncated, duration=3.0).silences == [(1.0, 3.0)]


def test_an_infinite_peak_is_unknown_not_a_number() -> None:
    log = parse_analysis_log(lines(SILENT_AUDIO), duration=3.0)
    assert (log.integrated_lufs, log.loudness_range_lu, log.true_peak_dbtp) == (-70.0, 0.0, None)
    assert log.silences == [(0.0, 3.0)]


def test_black_on_the_last_frame_runs_to_the_end() -> None:
    log = parse_analysis_log(lines(BLACK_TO_THE_END), duration=3.0, frame_seconds=1 / 30)
    assert log.black_segments == [(1.5, 3.0)]
    assert parse_analysis_log(lines(BLACK_TO_THE_END), duration=4.0, frame_seconds=1 / 30).black_segments == [
        (1.5, 2.96667)
    ]


def test_lines_that_only_look_like_figures_are_ignored() -> None:
    noise = [
        "    I               : tag named I\n",
        "[silencedetect_like @ 0x1] silence_start: 9\n",
        "    Peak:      -1.0 dBFS\n",
        "[h264 @ 0x55] error while decoding MB 3 4\n",
    ]
    assert parse_analysis_log(noise, duration=3.0) == AnalysisLog()


def test_the_result_has_every_key_and_a_summary() -> None:
    log = parse_analysis_log(lines(BLACK_THEN_PICTURE), duration=3.0, frame_seconds=1 / 30)
    result = build_result(media(), log)
    assert result == {
        "backend": "local",
        "duration": 3.0,
        "width": 320,
        "height": 240,
        "fps": 30.0,
        "bit_rate": 257154,
        "size_bytes": 96433,
        "format": "mov,mp4,m4a,3gp,3g2,mj2",
        "video_codec": "h264",
        "audio_codec": "aac",
        "has_audio": True,
        "has_video": True,
        "loudness": {"integrated_lufs": -22.5, "loudness_range_lu": 20.0, "true_peak_dbtp": -17.7},
        "silences": [{"start": 1.0, "end": 2.0, "duration": 1.0}],
        "scene_cuts": [{"time": 1.0, "score": 0.415}],
        "black_segments": [{"start": 0.0, "end": 1.0, "duration": 1.0}],
        "summary": "3.0 s 320x240 30 fps h264/aac, -22.5 LUFS, 1 scene cut, 1 silence, 1 black segment",
    }


def test_without_audio_loudness_is_null() -> None:
    log = parse_analysis_log(lines(BLACK_TO_THE_END), duration=3.0, frame_seconds=1 / 30)
    result = build_result(media(audio=False), log)
    assert result["loudness"] is None
    assert result["silences"] == []
    assert result["audio_codec"] is None
    assert result["summary"] == "3.0 s 320x240 30 fps h264, no audio, 1 scene cut, 1 black segment"


def test_without_video_there_are_no_picture_figures() -> None:
    result = build_result(media(video=False), parse_analysis_log(lines(SILENT_AUDIO), duration=3.0))
    assert [result[key] for key in ("width", "height", "fps", "video_codec")] == [None] * 4
    assert result["scene_cuts"] == result["black_segments"] == []
    assert result["summary"] == "3.0 s aac, -70.0 LUFS, 1 silence"


def test_the_command_runs_only_the_filters_for_streams_present() -> None:
    source = Path("/media/-odd:name.mp4")
    both = build_analysis_command(source, media(), ffmpeg="ffmpeg")
    assert both[:4] == ["ffmpeg", "-nostdin", "-hide_banner", "-nostats"]
    assert both[both.index("-protocol_whitelist") + 1] == "file"
    assert both[both.index("-i") - 2 : both.index("-i") + 2] == [
        "-f",
        "mov",
        "-i",
        "file:/media/-odd:name.mp4",
    ]
    assert both[-3:] == ["-f", "null", "-"]
    video_filters = both[both.index("-vf") + 1]
    assert video_filters.startswith("scale=")  # detection runs on the small picture
    assert "blackdetect=d=0.5:pix_th=0.10" in video_filters
    assert "ebur128=peak=true:framelog=verbose" in both[both.index("-af") + 1]

    audio_only = build_analysis_command(source, media(video=False), ffmpeg="ffmpeg")
    assert "-vf" not in audio_only
    assert "0:V:0" not in audio_only
    video_only = build_analysis_command(source, media(audio=False), ffmpeg="ffmpeg")
    assert "-af" not in video_only
    assert "0:a:0" not in video_only


def test_pictures_come_from_the_rendition_and_sound_from_the_source() -> None:
    source, rendition = Path("/media/a.mp4"), Path("/work/hls/240p/index.m3u8")
    command = build_analysis_command(source, media(), ffmpeg="ffmpeg", pictures=rendition)
    inputs = [command[i - 1 : i + 2] for i, arg in enumerate(command) if arg == "-i"]
    assert inputs == [["mov", "-i", "file:/media/a.mp4"], ["hls", "-i", "file:/work/hls/240p/index.m3u8"]]
    maps = [command[i + 1] for i, arg in enumerate(command) if arg == "-map"]
    assert maps == ["1:V:0", "0:a:0"]
    # The rendition's clock starts at its AAC priming; counting from its first picture fixes that.
    assert command[command.index("-vf") + 1].startswith("setpts=PTS-STARTPTS,scale=")

    # Sound only: there is no picture to read, so the rendition is not opened at all.
    audio_only = build_analysis_command(source, media(video=False), ffmpeg="ffmpeg", pictures=rendition)
    assert [arg for arg in audio_only if arg.startswith("file:")] == ["file:/media/a.mp4"]
