"""Test media generated with ffmpeg's lavfi sources: small, short, made on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    seconds: float = 2.0,
    fps: int = 30,
    audio: bool = True,
    extra: tuple[str, ...] = (),
) -> Path:
    """An H.264/AAC mp4 of testsrc2 (and a 440 Hz sine when audio)."""
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    args.append(str(path))
    subprocess.run(args, check=True)
    return path


def make_long_flat_clip(folder: Path, *, seconds: int = 3600) -> Path:
    """Long video of a flat picture: 2 s encoded once, then looped by copying (cheap to make, a
    few MB, and a transcode that runs far longer than any test waits for)."""
    short, long = folder / "short.mp4", folder / "long.mp4"
    base = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    subprocess.run([*base, "-f", "lavfi", "-i", "color=c=gray:s=320x240:r=25:d=2", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "50", str(short)], check=True)  # fmt: skip
    loops = max(0, seconds // 2 - 1)
    subprocess.run([*base, "-stream_loop", str(loops), "-i", str(short), "-c", "copy", str(long)], check=True)
    return long
