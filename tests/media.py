"""Test media generated with ffmpeg's lavfi sources: small, short, made on demand."""

from __future__ import annotations

import struct
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


def _atoms(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    found, at = [], start
    while at < end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        found.append((kind, data[at : at + size]))
        at += size
    return found


def cover_art_first(source: Path, dest: Path) -> Path:
    """The MP4 ``source`` (with cover art, which ffmpeg's muxer stores after the tracks) with
    its metadata box moved before the tracks, as some taggers write it: ffmpeg's demuxer then
    reads the cover art as stream 0, before the video. Only boxes inside moov move, so every
    sample offset into mdat stays right."""
    data = source.read_bytes()
    rebuilt = b""
    for kind, box in _atoms(data, 0, len(data)):
        if kind == b"moov":
            children = _atoms(box, 8, len(box))
            metadata = b"".join(child for name, child in children if name == b"udta")
            others = [child for name, child in children if name != b"udta"]
            box = box[:8] + others[0] + metadata + b"".join(others[1:])  # mvhd stays first
        rebuilt += box
    dest.write_bytes(rebuilt)
    return dest


def make_multilingual_clip(
    path: Path, *, seconds: float = 3.0, subtitle: str = "Hello from the source"
) -> Path:
    """A Matroska clip of testsrc2 with two sound tracks (English 440 Hz, then French 880 Hz,
    titled) and one English SubRip subtitle showing ``subtitle`` from 0.2 s to the end."""
    srt = path.with_suffix(".srt")
    srt.write_text(f"1\n00:00:00,200 --> 00:00:{int(seconds):02d},000\n{subtitle}\n")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=880:sample_rate=48000:duration={seconds}",
         "-i", str(srt),
         "-map", "0", "-map", "1", "-map", "2", "-map", "3",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt",
         "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fre",
         "-metadata:s:a:1", "title=Français", "-metadata:s:s:0", "language=eng", str(path)],
        check=True,
    )  # fmt: skip
    return path


def understate_duration(source: Path, dest: Path, seconds: float) -> Path:
    """The Matroska ``source`` with its segment's Duration saying it lasts ``seconds``, while
    its clusters hold what they held: a container that lies about its length (Matroska gives
    its tracks no duration of their own to check it by)."""
    data = bytearray(source.read_bytes())
    at = data.index(b"\x44\x89\x88") + 3  # Duration, an 8-byte float in milliseconds
    data[at : at + 8] = struct.pack(">d", seconds * 1000)
    dest.write_bytes(bytes(data))
    return dest
