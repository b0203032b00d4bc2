"""Capped CRF against the fixed ladder, the ffmpeg binaries against each other, and what the
quality receipts cost: three questions issue 16 asks, answered in one run.

Run from the repository root: ``.venv/bin/python -m bench.quality [--seconds 10]
[--binary-seconds 30] [--repeat 1] [--parts rate,receipts,binaries]``.

1. Bytes and VMAF (mean and 5th percentile over every frame, libvmaf vmaf_v0.6.1) of the
   fixed-rate ladder against capped CRF, on three generated 1080p30 sources of different
   difficulty: a still slide with text, ``testsrc2``, and a noisy high-motion picture. Goal:
   at least 20% fewer bytes with no rendition's 5th percentile more than 1 VMAF point lower.
2. Encode wall and CPU seconds of the same 4-rendition ladder with Debian's ffmpeg and with
   imageio-ffmpeg's static build, as ratios (the cases alternate; the least-CPU run is kept).
3. CPU seconds of the quality receipts (the sample the transcode stage measures) against the
   transcode's own, per source. Goal: at most 15%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.transcode import Measure, measure
from services.config import Settings
from services.media.ffmpeg import Encoders, build_hls_command, run_ffmpeg
from services.media.hls import encoders_for, picture_plan_for, storyboard_plan_for
from services.media.ladder import DEFAULT_RATE_CONTROL, RateControl, Rendition, plan_audio, plan_ladder
from services.media.pictures import PicturePlan
from services.media.probe import MediaInfo, probe
from services.media.quality import (
    Cut,
    Window,
    build_quality_command,
    plan_windows,
    read_vmaf_log,
    segment_cuts,
)

BYTES_SAVED_TARGET = 0.20
P5_LOSS_LIMIT = 1.0
RECEIPT_SHARE_TARGET = 0.15
BINARY_RUNGS = ("360p", "480p", "720p", "1080p")
DEBIAN_FFMPEG = "ffmpeg"
SOURCES: dict[str, str] = {
    # A slide: white with lines of text and a logo-like box, still for the whole clip.
    "slide": (
        "color=c=white:s=1920x1080:r=30,"
        "drawtext=text='Quarterly results':fontsize=96:x=120:y=120,"
        "drawtext=text='Revenue grew while costs stayed flat in every region':fontsize=44:x=120:y=360,"
        "drawtext=text='Next - what the second half of the year will bring':fontsize=44:x=120:y=460,"
        "drawbox=x=1500:y=800:w=300:h=180:color=navy:t=fill"
    ),
    "testsrc2": "testsrc2=size=1920x1080:rate=30",
    # Moving, rotating, and covered in fresh noise every frame: the encoder's worst case.
    "noisy": "testsrc2=size=1920x1080:rate=30,rotate=a=0.4*t:c=black,noise=alls=24:allf=t+u",
}


def make_source(path: Path, picture: str, seconds: int) -> Path:
    # Near-lossless H.264 with stereo sound: the renditions are judged against this file.
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"{picture},trim=duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "10", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "192k", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


def ladder_command(
    source: Path,
    info: MediaInfo,
    renditions: list[Rendition],
    out: Path,
    settings: Settings,
    encoders: Encoders,
    picture: PicturePlan,
) -> list[str]:
    """The transcode stage's command, as services.media.hls builds it."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return build_hls_command(
        source,
        info,
        renditions,
        out,
        segment_seconds=settings.segment_seconds,
        audio=plan_audio(info),
        picture=picture,
        encoders=encoders,
        storyboard=storyboard_plan_for(info, settings),
    )


def video_bytes(out: Path, renditions: Sequence[Rendition]) -> int:
    return sum(p.stat().st_size for r in renditions for p in (out / r.name).glob("seg_*"))


def vmaf_scores(
    settings: Settings,
    source: Path,
    info: MediaInfo,
    picture: PicturePlan,
    renditions: list[Rendition],
    out: Path,
    windows: list[Window],
) -> list[dict[str, Any]]:
    logs = out / "vmaf"
    logs.mkdir(exist_ok=True)
    # The whole clip: read through each rendition's playlist from its start.
    cuts = [[Cut(out / r.name / "index.m3u8", 0.0) for _ in windows] for r in renditions]
    args = build_quality_command(
        settings.ffmpeg_path, source, info, picture, renditions, cuts, windows, logs, metric="vmaf",
        every_frame=True,
    )  # fmt: skip
    run_ffmpeg(args, duration=0.0, memory_limit_bytes=settings.ffmpeg_memory_limit_bytes)
    return [read_vmaf_log((logs / f"{r.name}.vmaf.log").read_text()) for r in renditions]


def compare_rate_control(
    work: Path, sources: dict[str, Path], settings: Settings
) -> tuple[bool, dict[str, dict[str, Measure]]]:
    print("\n## 1. Fixed ladder (bitrate) against capped CRF, whole clips")
    print(f"{'source':<10}{'rendition':<11}{'MB fixed':>10}{'MB crf':>9}{'VMAF fixed':>12}{'crf':>7}"
          f"{'p5 fixed':>10}{'crf':>7}")  # fmt: skip
    passed = True
    transcode_cpu: dict[str, dict[str, Measure]] = {}
    totals = {"bitrate": 0, "capped_crf": 0}
    for name, source in sources.items():
        info = probe(source)
        picture = picture_plan_for(source, info, settings)
        assert picture is not None
        results: dict[str, tuple[list[Rendition], list[dict[str, Any]], list[int]]] = {}
        transcode_cpu[name] = {}
        for mode in ("bitrate", "capped_crf"):
            rate_control: RateControl = mode  # type: ignore[assignment]
            renditions = plan_ladder(info, rate_control=rate_control)
            out = work / f"{name}-{mode}"
            command = ladder_command(source, info, renditions, out, settings, encoders_for(settings), picture)
            transcode_cpu[name][mode] = measure([command], info.duration, settings.ffmpeg_memory_limit_bytes)
            scores = vmaf_scores(
                settings, source, info, picture, renditions, out, [Window(0.0, info.duration)]
            )
            sizes = [video_bytes(out, [r]) for r in renditions]
            totals[mode] += sum(sizes)
            results[mode] = (renditions, scores, sizes)
        (renditions, fixed, fixed_sizes), (_, crf, crf_sizes) = results["bitrate"], results["capped_crf"]
        for rendition, a, b, size_a, size_b in zip(
            renditions, fixed, crf, fixed_sizes, crf_sizes, strict=True
        ):
            loss = a["vmaf_p5"] - b["vmaf_p5"]
            passed = passed and loss <= P5_LOSS_LIMIT
            print(f"{name:<10}{rendition.name:<11}{size_a / 1e6:>10.2f}{size_b / 1e6:>9.2f}"
                  f"{a['vmaf_mean']:>12.2f}{b['vmaf_mean']:>7.2f}{a['vmaf_p5']:>10.2f}{b['vmaf_p5']:>7.2f}"
                  f"{'  <- p5 more than 1 point lower' if loss > P5_LOSS_LIMIT else ''}")  # fmt: skip
        ratio = sum(crf_sizes) / sum(fixed_sizes)
        print(f"{name:<10}{'all':<11}{sum(fixed_sizes) / 1e6:>10.2f}{sum(crf_sizes) / 1e6:>9.2f}"
              f"   bytes ratio crf/fixed {ratio:.3f}")  # fmt: skip
    ratio = totals["capped_crf"] / totals["bitrate"]
    passed = passed and ratio <= 1 - BYTES_SAVED_TARGET
    print(f"all sources: bytes ratio crf/fixed {ratio:.3f} ({(1 - ratio) * 100:.1f}% fewer); target <= "
          f"{1 - BYTES_SAVED_TARGET:.2f} with every p5 within {P5_LOSS_LIMIT:g} point  ->  "
          f"{'PASS' if passed else 'MISS'}")  # fmt: skip
    return passed, transcode_cpu


def compare_binaries(work: Path, seconds: int, repeat: int, settings: Settings) -> None:
    print(f"\n## 2. Debian's ffmpeg against the static build: {len(BINARY_RUNGS)}-rendition ladder")
    source = make_source(work / "binary-source.mp4", SOURCES["testsrc2"], seconds)
    info = probe(source)
    picture = picture_plan_for(source, info, settings)
    assert picture is not None
    renditions = plan_ladder(info, BINARY_RUNGS)
    static = encoders_for(settings)
    cases: dict[str, Encoders] = {
        "debian 5.1": Encoders(DEBIAN_FFMPEG, static.x264_preset, static.x265_preset, static.svtav1_preset),
        "static 9.0.2": static,
    }
    runs: dict[str, list[Measure]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, encoders in cases.items():
            command = ladder_command(
                source, info, renditions, work / "binary-out", settings, encoders, picture
            )
            m = measure([command], info.duration, settings.ffmpeg_memory_limit_bytes)
            runs[name].append(m)
            print(f"  {name}: wall {m.wall_seconds:.2f} s, cpu {m.cpu_seconds:.2f} s", flush=True)
    best = {name: min(measures, key=lambda m: m.cpu_seconds) for name, measures in runs.items()}
    debian, ours = best["debian 5.1"], best["static 9.0.2"]
    print(f"source: {seconds} s 1080p30 testsrc2 with sound; {', '.join(r.name for r in renditions)}; "
          f"preset {settings.x264_preset}, repeat {repeat}")  # fmt: skip
    print(f"{'binary':<16}{'wall s':>10}{'cpu s':>10}")
    for name, m in best.items():
        print(f"{name:<16}{m.wall_seconds:>10.2f}{m.cpu_seconds:>10.2f}")
    print(f"{'ratio static/deb':<16}{ours.wall_seconds / debian.wall_seconds:>10.3f}"
          f"{ours.cpu_seconds / debian.cpu_seconds:>10.3f}")  # fmt: skip


def receipts_cost(
    work: Path,
    sources: dict[str, Path],
    settings: Settings,
    transcode_cpu: dict[str, dict[str, Measure]],
    repeat: int,
) -> bool:
    """The receipts' CPU against the transcode's (measured by part 1, or here when it did not run)."""
    print(f"\n## 3. Quality receipts against the transcode (default rate control, {DEFAULT_RATE_CONTROL})")
    print(f"{'source':<10}{'transcode cpu s':>17}{'receipts cpu s':>16}{'share':>8}")
    worst = 0.0
    for name, source in sources.items():
        info = probe(source)
        picture = picture_plan_for(source, info, settings)
        assert picture is not None
        renditions = plan_ladder(info, rate_control=DEFAULT_RATE_CONTROL)
        out = work / f"{name}-{DEFAULT_RATE_CONTROL}"
        if DEFAULT_RATE_CONTROL not in transcode_cpu.get(name, {}):
            command = ladder_command(source, info, renditions, out, settings, encoders_for(settings), picture)
            measured = measure([command], info.duration, settings.ffmpeg_memory_limit_bytes)
            transcode_cpu.setdefault(name, {})[DEFAULT_RATE_CONTROL] = measured
        logs = work / f"{name}-receipt-logs"
        logs.mkdir(exist_ok=True)
        lowest = min(r.fps for r in renditions)
        windows = plan_windows(info.duration, lowest, settings.segment_seconds)
        cuts = [segment_cuts(out / r.name, windows, logs) for r in renditions]
        args = build_quality_command(
            settings.ffmpeg_path, source, info, picture, renditions, cuts, windows, logs, metric="vmaf"
        )
        # On a shared host one run can be far off: the least CPU of `repeat` runs is kept.
        runs = [measure([args], 0.0, settings.ffmpeg_memory_limit_bytes) for _ in range(repeat)]
        cost = min(runs, key=lambda m: m.cpu_seconds)
        transcode = transcode_cpu[name][DEFAULT_RATE_CONTROL]
        share = cost.cpu_seconds / transcode.cpu_seconds
        worst = max(worst, share)
        print(f"{name:<10}{transcode.cpu_seconds:>17.2f}{cost.cpu_seconds:>16.2f}{share:>8.3f}")
    passed = worst <= RECEIPT_SHARE_TARGET
    print(f"worst share {worst:.3f}; target <= {RECEIPT_SHARE_TARGET}  ->  {'PASS' if passed else 'MISS'}")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="length of each quality source")
    parser.add_argument("--binary-seconds", type=int, default=30, help="length of the binary bench source")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per binary and per receipt; the least CPU is kept"
    )
    parser.add_argument(
        "--parts", default="rate,receipts,binaries", help="which parts to run (comma-separated, default all)"
    )
    args = parser.parse_args()
    settings = Settings()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-quality-") as tmp:
        work = Path(tmp)
        print(f"generating three {args.seconds} s 1080p30 sources…", flush=True)
        sources = {
            name: make_source(work / f"{name}.mp4", picture, args.seconds)
            for name, picture in SOURCES.items()
        }
        parts = set(args.parts.split(","))
        transcode_cpu: dict[str, dict[str, Measure]] = {}
        if "rate" in parts:
            _, transcode_cpu = compare_rate_control(work, sources, settings)
        if "receipts" in parts:
            receipts_cost(work, sources, settings, transcode_cpu, args.repeat)
        if "binaries" in parts:
            compare_binaries(work, args.binary_seconds, args.repeat, settings)
    print(f"\nhost: {os.cpu_count()} cpus, load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
