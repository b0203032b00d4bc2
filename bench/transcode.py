"""One ffmpeg for the whole ladder versus one ffmpeg per rendition, on the same source.

Run from the repository root: ``.venv/bin/python -m bench.transcode [--seconds 30] [--repeat 1]``.

Both sides use :func:`services.media.ffmpeg.build_hls_command`; the baseline calls it once per
rendition, so bitrates, preset, keyframe and segment options are identical and the only
difference is decoding (and scaling from) the source once instead of three times. Ours is the
transcode stage's real command, so it also writes the poster and the storyboard sprite; the
seed-style baseline writes neither (ours does more work, and is still measured as is).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from services.config import Settings
from services.media.ffmpeg import build_hls_command, run_ffmpeg
from services.media.hls import encoders_for, picture_plan_for, storyboard_plan_for
from services.media.ladder import Rendition, plan_audio, plan_ladder
from services.media.probe import MediaInfo, probe

RUNGS = ("360p", "480p", "720p")
CPU_RATIO_TARGET = 0.74


@dataclass(frozen=True)
class Measure:
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float


def make_source(path: Path, seconds: int) -> Path:
    # A camera-like upload: 1080p30 H.264 at high quality with stereo AAC; testsrc2 moves
    # and has fine detail, so neither decoder nor encoder gets an unrealistically easy ride.
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "192k", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _measure_runs(commands: Sequence[Sequence[str]], duration: float, memory_limit: int) -> Measure:
    """Run ``commands`` one after another in this (fresh) process and measure its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for args in commands:
        run_ffmpeg(args, duration=duration, memory_limit_bytes=memory_limit)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure(wall, cpu, after.ru_maxrss / 1024)  # ru_maxrss is KiB on Linux


def measure(commands: Sequence[Sequence[str]], duration: float, memory_limit: int) -> Measure:
    # ru_maxrss of RUSAGE_CHILDREN only ever grows, over every child a process has reaped, so
    # each case runs in a fresh worker: the peak then belongs to that case alone, not to the
    # source encode or the other case.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("fork")) as pool:
        return pool.submit(_measure_runs, commands, duration, memory_limit).result()


def commands_for(
    source: Path, info: MediaInfo, renditions: list[Rendition], out: Path, settings: Settings
) -> tuple[list[list[str]], list[list[str]]]:
    assert info.video is not None
    storyboard = storyboard_plan_for(info, settings)

    picture = picture_plan_for(source, info, settings)

    def command(chosen: list[Rendition], out_dir: Path, with_stills: bool, with_sound: bool) -> list[str]:
        out_dir.mkdir(parents=True)
        return build_hls_command(
            source,
            info,
            chosen,
            out_dir,
            segment_seconds=settings.segment_seconds,
            audio=plan_audio(info) if with_sound else (),
            picture=picture,
            encoders=encoders_for(settings),
            storyboard=storyboard if with_stills else None,
        )

    # Sound is encoded once either way (its own rendition): the baseline's first process does it.
    ours = [command(renditions, out / "ours", True, True)]
    baseline = [command([r], out / f"baseline-{r.name}", False, i == 0) for i, r in enumerate(renditions)]
    return ours, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=30, help="length of the generated source")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best is kept")
    args = parser.parse_args()
    settings = Settings()
    load = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        work = Path(tmp)
        print(f"generating a {args.seconds} s 1080p30 source with audio…", flush=True)
        source = make_source(work / "source.mp4", args.seconds)
        info = probe(source)
        renditions = plan_ladder(info, requested=RUNGS)
        ours_cmds, baseline_cmds = commands_for(source, info, renditions, work, settings)

        results: dict[str, list[Measure]] = {"ours (1 process)": [], "baseline (3 processes)": []}
        for _ in range(args.repeat):
            # Alternate the cases so drift (thermal, other load) hits both alike.
            for name, cmds in zip(results, (ours_cmds, baseline_cmds), strict=True):
                m = measure(cmds, info.duration, settings.ffmpeg_memory_limit_bytes)
                results[name].append(m)
                # Every run is shown: on a shared host the spread says how far to trust the best.
                print(f"  {name}: wall {m.wall_seconds:.2f} s, cpu {m.cpu_seconds:.2f} s", flush=True)

    # The least CPU is the run least disturbed by other load, for both cases alike.
    best = {name: min(runs, key=lambda m: m.cpu_seconds) for name, runs in results.items()}
    ours, baseline = best.values()
    print()
    fps = info.video.fps if info.video else 0.0
    print(f"source: {args.seconds} s 1920x1080 @ {fps:g} fps, audio: {info.has_audio}")
    print(f"renditions: {', '.join(f'{r.name} {r.width}x{r.height}' for r in renditions)}")
    print(f"preset {settings.x264_preset}, segments {settings.segment_seconds} s, repeat {args.repeat}")
    print(
        f"host: {os.cpu_count()} cpus, load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}"
    )
    print()
    print(f"{'case':<24}{'wall s':>10}{'cpu s':>10}{'peak RSS MiB':>15}")
    for name, m in best.items():
        print(f"{name:<24}{m.wall_seconds:>10.2f}{m.cpu_seconds:>10.2f}{m.peak_rss_mib:>15.1f}")
    cpu_ratio = ours.cpu_seconds / baseline.cpu_seconds
    verdict = "PASS" if cpu_ratio <= CPU_RATIO_TARGET else "MISS"
    print(f"{'ratio ours/baseline':<24}{ours.wall_seconds / baseline.wall_seconds:>10.3f}", end="")
    print(f"{cpu_ratio:>10.3f}{ours.peak_rss_mib / baseline.peak_rss_mib:>15.3f}")
    print(f"target: cpu ratio <= {CPU_RATIO_TARGET}  ->  {verdict} ({cpu_ratio:.3f})")


if __name__ == "__main__":
    main()
