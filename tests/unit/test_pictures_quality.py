"""Pure decisions about the picture (deinterlace, tone-map, idet), the quality receipts'
sample, command and logs, and the DASH manifest."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from services.media.dash import Representation, write_dash_manifest
from services.media.ladder import plan_audio, plan_ladder, plan_subtitles
from services.media.pictures import (
    PicturePlan,
    build_idet_command,
    interlaced_by_idet,
    needs_idet,
    plan_picture,
)
from services.media.playlists import Bitrates, MediaPlaylist, Segment
from services.media.probe import AudioStream, MediaInfo, SubtitleStream, VideoStream
from services.media.quality import (
    Cut,
    Scores,
    Window,
    build_quality_command,
    locate,
    merged_receipts,
    percentile,
    plan_windows,
    read_psnr_ssim_logs,
    read_vmaf_log,
    subsample,
    windows_within,
)
from services.storage import rewrite_mpd

SOURCE = Path("/work/source.mkv")


def media(**video: object) -> MediaInfo:
    stream = replace(
        VideoStream("h264", 1920, 1080, 25.0, "yuv420p", 0, coded_width=1920, coded_height=1080), **video
    )
    sound = AudioStream("aac", 2, 48_000, index=1, language="eng")
    return MediaInfo("matroska,webm", 30.0, 1, 0, stream, sound, 2, audio_tracks=(sound,), start_time=0.0)


IDET_LOG = """[Parsed_idet_0 @ 0x55] Repeated Fields: Neither:   120 Top:     0 Bottom:     0
[Parsed_idet_0 @ 0x55] Single frame detection: TFF:    80 BFF:     0 Progressive:    12 Undetermined:    28
[Parsed_idet_0 @ 0x55] Multi frame detection: TFF:   110 BFF:     0 Progressive:     3 Undetermined:     7
"""


def test_idet_verdicts() -> None:
    assert interlaced_by_idet(IDET_LOG)
    progressive = IDET_LOG.replace("TFF:   110", "TFF:     2").replace(
        "Progressive:     3", "Progressive:   111"
    )
    assert not interlaced_by_idet(progressive)
    assert not interlaced_by_idet("no idet output at all")


def test_idet_runs_on_the_main_video_with_the_probed_demuxer() -> None:
    args = build_idet_command("/opt/ffmpeg", SOURCE, media(index=2))
    assert args[:7] == ["/opt/ffmpeg", "-f", "matroska", "-protocol_whitelist", "file", "-i", str(SOURCE)]
    assert args[args.index("-filter_complex") + 1] == "[0:2]idet[s0]"
    assert args[args.index("-frames:v") + 1] == "120"
    assert args[args.index("-loglevel") + 1] == "info"  # idet's verdict is an info line


def test_idet_is_asked_only_when_the_file_does_not_say() -> None:
    assert needs_idet(media())
    assert not needs_idet(media(field_order="progressive"))
    assert not needs_idet(media(field_order="tt"))
    assert not needs_idet(media(codec="vp9"))


def test_the_picture_plan() -> None:
    assert plan_picture(media()) == PicturePlan(deinterlace=False, tone_map=None, bt601=False)
    assert plan_picture(media(field_order="bb")).deinterlace
    assert plan_picture(media(), detected_interlaced=True).deinterlace
    assert plan_picture(media(color_transfer="smpte2084")).tone_map == "smpte2084"
    assert plan_picture(media(color_transfer="arib-std-b67")).tone_map == "arib-std-b67"
    assert plan_picture(media(color_transfer="bt709")).tone_map is None
    assert plan_picture(media(coded_height=576, width=1024, height=576)).bt601  # untagged SD
    assert plan_picture(media(color_space="smpte170m")).bt601
    assert not plan_picture(media(color_space="bt709", coded_height=576)).bt601


def test_windows_start_half_a_frame_after_a_segment_boundary_inside_one_segment() -> None:
    windows = plan_windows(60.0, 30.0, 4.0)
    # Parts start at 0, 20 and 40 s: the first at the very start, the others half a frame in.
    assert [w.start for w in windows] == pytest.approx([0.0, 20 + 1 / 60, 40 + 1 / 60])
    assert all(w.seconds == 0.5 for w in windows)
    assert len(plan_windows(30.0, 30.0, 4.0)) == 1
    (short,) = plan_windows(0.5, 30.0, 4.0)
    assert short == Window(0.0, 0.5)
    # Half-second segments: the window ends before the next segment starts.
    (tight,) = plan_windows(10.0, 30.0, 0.5)
    assert tight.seconds == pytest.approx(0.5 - 1 / 30)


def test_a_window_is_read_from_the_segment_that_holds_it() -> None:
    playlist = MediaPlaylist(4.0, [Segment("a.ts", 4.0), Segment("b.ts", 4.0), Segment("c.ts", 1.5)])
    assert locate(playlist, Window(0.0, 1.0)) == (0, 0.0)
    assert locate(playlist, Window(4 + 1 / 60, 1.0)) == (1, pytest.approx(1 / 60))
    assert locate(playlist, Window(8.5, 1.0)) == (2, pytest.approx(0.5))
    assert locate(playlist, Window(20.0, 1.0)) == (2, pytest.approx(12.0))  # past the end: the last


def test_about_five_frames_a_window_are_scored() -> None:
    assert subsample(30.0, Window(4.0, 0.5)) == 3
    assert subsample(60.0, Window(0.0, 1.0)) == 12
    assert subsample(5.0, Window(0.0, 0.5)) == 1


def test_percentile() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile(list(map(float, range(101))), 5) == 5.0
    with pytest.raises(ValueError):
        percentile([], 5)


def test_quality_command_aligns_source_and_renditions() -> None:
    info = replace(media(start_time=0.08), start_time=0.0)
    renditions = plan_ladder(info, ["240p", "1080p"])
    windows = [Window(4.98, 1.0)]
    cuts = [[Cut(Path(f"/hls/{r.name}/seg_00001.ts"), 0.98)] for r in renditions]
    args = build_quality_command(
        "/opt/ffmpeg", SOURCE, info, PicturePlan(True, None, False), renditions, cuts, windows,
        Path("/logs"), metric="vmaf",
    )  # fmt: skip
    names = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
    assert sorted(names) == sorted([str(SOURCE), "/hls/240p/seg_00001.ts", "/hls/1080p/seg_00001.ts"])
    source, played = args.index(str(SOURCE)) - 1, args.index("/hls/240p/seg_00001.ts") - 1
    # The source is cut where the renditions' clock says, plus where its picture starts.
    # Each input decoded by one thread: a few frames each, six inputs side by side.
    assert args[source - 10 : source] == [
        "-f", "matroska", "-protocol_whitelist", "file", "-ss", "5.060000", "-t", "1.000000",
        "-threads", "1",
    ]  # fmt: skip
    # Each rendition from the one segment holding the window, as far into it as the window starts.
    assert args[played - 8 : played] == [
        "-protocol_whitelist", "file", "-ss", "0.980000", "-t", "1.000000", "-threads", "1",
    ]  # fmt: skip
    graph = args[args.index("-filter_complex") + 1]
    # Judged against the picture as the renditions show it (here: deinterlaced).
    assert f"[{names.index(str(SOURCE))}:0]bwdif=" in graph
    assert graph.count("libvmaf=") == 2
    # Every 5th frame (25 fps, one second) is scaled and scored, on the reference and both renditions.
    assert graph.count("select=not(mod(n\\,5))") == 3
    assert "log_path=/logs/240p.vmaf.log" in graph and "model=version\\\\=vmaf_v0.6.1" in graph
    assert graph.count("n_threads=1") == 2
    assert graph.count("scale=1920:1080") == 3  # the reference and both renditions at the top size
    psnr = build_quality_command(
        "ffmpeg", SOURCE, info, PicturePlan(False, None, False), renditions, cuts, windows,
        Path("/logs"), metric="psnr_ssim",
    )  # fmt: skip
    graph = psnr[psnr.index("-filter_complex") + 1]
    assert "libvmaf" not in graph and graph.count("psnr=") == 2 and graph.count("ssim=") == 2


def test_vmaf_and_psnr_logs_are_read() -> None:
    frames = [{"frameNum": n, "metrics": {"vmaf": 90.0 + n % 10}} for n in range(100)]
    receipt = read_vmaf_log(json.dumps({"frames": frames, "pooled_metrics": {}}))
    assert receipt == {
        "metric": "vmaf",
        "model": "vmaf_v0.6.1",
        "vmaf_mean": 94.5,
        "vmaf_p5": 90.0,
        "frames": 100,
    }
    psnr = "n:1 mse_avg:1.0 mse_y:1 psnr_avg:40.00 psnr_y:40\nn:2 mse_avg:0 psnr_avg:inf psnr_y:inf\n"
    ssim = "n:1 Y:0.99 U:0.99 V:0.99 All:0.990000 (20.0)\nn:2 Y:1 U:1 V:1 All:1.000000 (inf)\n"
    assert read_psnr_ssim_logs(psnr, ssim) == {
        "metric": "psnr_ssim",
        "psnr_mean": 70.0,
        "psnr_p5": 43.0,
        "ssim_mean": 0.995,
        "frames": 2,
    }


def test_a_part_measures_the_windows_that_fall_in_it_on_its_own_clock() -> None:
    """Two minutes in two parts: the sample spans both, not the first minute alone."""
    windows = plan_windows(120.0, 30.0, 4.0)
    assert [w.start for w in windows] == [0.0, round(40 + 1 / 60, 6), round(80 + 1 / 60, 6)]
    first, second = windows_within(windows, 0.0, 60.0), windows_within(windows, 60.0, None)
    assert first == windows[:2]
    assert second == [Window(round(20 + 1 / 60, 6), windows[2].seconds)]
    assert windows_within(windows, 40.0, 80.0) == [Window(round(1 / 60, 6), windows[1].seconds)]
    assert windows_within(windows, 4.0, 40.0) == []  # a part with no window measures nothing


def test_the_parts_scores_pool_into_one_receipt_per_rendition() -> None:
    low = [Scores("vmaf", (80.0, 82.0), sample_seconds=0.5), Scores("vmaf", (90.0,), sample_seconds=0.5)]
    high = [Scores("vmaf", (95.0, 97.0), sample_seconds=0.5), None]  # this part's measure failed
    per_part = [[asdict(low[0]), asdict(high[0])], None, [asdict(low[1]), None]]  # part 1: no window
    low_receipt, high_receipt = merged_receipts(per_part, 2)
    assert low_receipt == Scores("vmaf", (80.0, 82.0, 90.0), sample_seconds=1.0).receipt()
    assert (low_receipt["frames"], low_receipt["vmaf_mean"], low_receipt["sample_seconds"]) == (3, 84.0, 1.0)
    assert high_receipt is not None and high_receipt["frames"] == 2
    assert merged_receipts([None, None], 2) == [None, None]


def test_a_part_measured_before_pooled_scores_keeps_its_receipt() -> None:
    """A job whose first part ran on the previous release (a finished receipt in its output)
    still stitches, with that receipt."""
    old = {"metric": "vmaf", "model": "vmaf_v0.6.1", "vmaf_mean": 93.1, "vmaf_p5": 90.2, "frames": 15}
    assert merged_receipts([[old], None], 1) == [old]


def test_psnr_scores_pool_with_their_ssim() -> None:
    pooled = merged_receipts(
        [
            [asdict(Scores("psnr_ssim", (40.0,), (0.98,), 0.5))],
            [asdict(Scores("psnr_ssim", (44.0,), (0.99,), 0.5))],
        ],
        1,
    )
    assert pooled == [
        {
            "metric": "psnr_ssim",
            "psnr_mean": 42.0,
            "psnr_p5": 40.2,
            "ssim_mean": 0.985,
            "frames": 2,
            "sample_seconds": 1.0,
        }
    ]


def test_dash_manifest_lists_every_segment_of_every_rendition() -> None:
    info = media()
    renditions = plan_ladder(info, ["240p", "720p"], codecs=("h264", "hevc"))
    playlist = MediaPlaylist(4.0, [Segment("seg_00000.m4s", 4.0), Segment("seg_00001.m4s", 2.5)])
    rates = Bitrates(500_000, 400_000)
    video = [(r, Representation(r.name, f"init_{r.name}.mp4", playlist, rates)) for r in renditions]
    audio = [(a, Representation(a.name, f"init_{a.name}.mp4", playlist, rates)) for a in plan_audio(info)]
    text = plan_subtitles(replace(info, subtitles=(SubtitleStream("subrip", 3, "fre"),)))
    root = ET.fromstring(write_dash_manifest(30.0, 4, video, audio, [(text[0], "text-0/abc.vtt")]))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    assert root.get("type") == "static" and root.get("mediaPresentationDuration") == "PT30.000S"
    sets = root.findall("d:Period/d:AdaptationSet", ns)
    assert [s.get("contentType") for s in sets] == ["video", "video", "audio", "text"]
    assert (sets[3].get("lang"), sets[3].findtext("d:Representation/d:BaseURL", namespaces=ns)) == (
        "fr",
        "text-0/abc.vtt",
    )
    hevc = sets[1].find("d:Representation", ns)
    assert hevc is not None and hevc.get("codecs", "").startswith("hvc1.1.6.L")
    assert sets[2].get("lang") == "en"
    first = sets[0].find("d:Representation", ns)
    assert first is not None
    assert first.find("d:SegmentList/d:Initialization", ns).get("sourceURL") == "240p/init_240p.mp4"  # type: ignore[union-attr]
    assert [u.get("media") for u in first.findall("d:SegmentList/d:SegmentURL", ns)] == [
        "240p/seg_00000.m4s",
        "240p/seg_00001.m4s",
    ]
    assert [s.get("d") for s in first.findall("d:SegmentList/d:SegmentTimeline/d:S", ns)] == ["4000", "2500"]
    signed = rewrite_mpd(
        write_dash_manifest(30.0, 4, video, audio, [(text[0], "text-0/abc.vtt")]),
        lambda uri: f"https://s3/{uri}?X=1&Y=2",
    )
    root = ET.fromstring(signed)
    urls = [u.get("media") for u in root.iter("{urn:mpeg:dash:schema:mpd:2011}SegmentURL")]
    assert urls[0] == "https://s3/240p/seg_00000.m4s?X=1&Y=2"
    assert root.findtext(".//d:BaseURL", namespaces=ns) == "https://s3/text-0/abc.vtt?X=1&Y=2"


def test_parts_measured_by_unlike_ffmpegs_still_stitch() -> None:
    """Hosts may run different ffmpegs (one with libvmaf, one without): the stitch, which must
    not fail for a best-effort measure, pools the scores like the first part's."""
    vmaf = asdict(Scores("vmaf", (90.0, 92.0), sample_seconds=0.5))
    psnr = asdict(Scores("psnr_ssim", (40.0,), (0.98,), 0.5))
    [receipt] = merged_receipts([[vmaf], [psnr]], 1)
    assert receipt == Scores("vmaf", (90.0, 92.0), sample_seconds=0.5).receipt()
