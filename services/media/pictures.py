"""What the source's picture needs before it is scaled: deinterlacing, HDR to SDR, colour.

Pure decisions from the probe (and, for interlacing a file does not declare, from ``idet`` on
a sample, whose command and log are built and read here), applied as ffmpeg-python filter
steps by services/media/ffmpeg.py. Every rendition comes out 8-bit 4:2:0 BT.709, tagged so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from services.media.probe import MediaInfo

# idet looks at this many frames from the start: enough to outvote a few undetermined ones,
# a second or two of decoding even for 1080p.
IDET_FRAMES = 120
# Interlaced when that many more frames look like fields than like whole pictures.
IDET_INTERLACED_SHARE = 0.5
_IDET_MULTI = re.compile(
    r"Multi frame detection:\s*TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*Progressive:\s*(\d+)\s*Undetermined:\s*(\d+)"
)
# Sources coded with the BT.601 matrix: SD video says so, or says nothing at SD sizes.
BT601_SPACES = frozenset({"bt470bg", "smpte170m"})
SD_MAX_HEIGHT = 576
BT709 = "bt709"


@dataclass(frozen=True)
class PicturePlan:
    deinterlace: bool
    tone_map: str | None  # the source's HDR transfer ("smpte2084", "arib-std-b67"), None for SDR
    bt601: bool  # the source's matrix is BT.601: converted to BT.709 while scaling


def build_idet_command(ffmpeg: str, source: Path, info: MediaInfo) -> list[str]:
    """ffmpeg's interlace detector on the first IDET_FRAMES frames of the main video."""
    assert info.video is not None
    stream = ffmpeg_python.input(str(source), f=info.demuxer, protocol_whitelist="file")[
        str(info.video.index)
    ]
    output = ffmpeg_python.output(stream.filter("idet"), "-", f="null", **{"frames:v": IDET_FRAMES})
    args: list[str] = output.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "info").compile(
        cmd=ffmpeg
    )
    return args


def interlaced_by_idet(log: str) -> bool:
    """True when idet's multi-frame verdict calls most frames fields (top or bottom first)."""
    found = _IDET_MULTI.findall(log)
    if not found:
        return False
    tff, bff, progressive, undetermined = (int(value) for value in found[-1])
    judged = tff + bff + progressive
    return judged > 0 and (tff + bff) / judged > IDET_INTERLACED_SHARE and tff + bff > undetermined / 2


def plan_picture(info: MediaInfo, *, detected_interlaced: bool = False) -> PicturePlan:
    """What the main video needs; ``detected_interlaced`` is idet's verdict for a file that
    does not declare fields itself."""
    assert info.video is not None
    video = info.video
    bt601 = video.color_space in BT601_SPACES or (
        not video.color_space and video.coded_height <= SD_MAX_HEIGHT and not video.hdr
    )
    return PicturePlan(
        deinterlace=video.declared_interlaced or detected_interlaced,
        tone_map=video.color_transfer if video.hdr else None,
        bt601=bt601,
    )


def needs_idet(info: MediaInfo) -> bool:
    """Ask idet only when the file does not say (MPEG-4 Part 2 in AVI, DV, raw formats): a
    declared order is trusted, and so is a codec that cannot code fields. idet is fooled by
    some synthetic pictures (testsrc2 reads as fields), so it is not asked over a file's word."""
    video = info.video
    if video is None or video.field_order:
        return False
    return video.codec not in ("vp8", "vp9", "av1", "png", "mjpeg", "gif", "webp")


def _tone_mapped(stream: Any, transfer: str) -> Any:
    # zscale linearises the HDR signal (100 nits as 1.0), tonemap compresses highlights in
    # linear light (hable keeps mid-tones; desat=0 keeps colour in bright areas), then
    # zscale converts primaries and transfer to BT.709 and back to limited-range YUV.
    return (
        stream.filter("zscale", tin=transfer, pin="bt2020", min="bt2020nc", t="linear", npl=100)
        .filter("format", "gbrpf32le")
        .filter("zscale", p=BT709)
        .filter("tonemap", tonemap="hable", desat=0)
        .filter("zscale", t=BT709, m=BT709, r="tv")
    )


def picture_steps(stream: Any, plan: PicturePlan) -> Any:
    """The steps every rendition shares, on the source's picture before any scaling."""
    if plan.deinterlace:
        # One frame per frame (send_frame), so the frame rate stays the probed one; the
        # field parity comes from the stream, which idet's own verdict agrees with.
        stream = stream.filter("bwdif", mode="send_frame", parity="auto", deint="all")
    if plan.tone_map is not None:
        stream = _tone_mapped(stream, plan.tone_map)
    return stream


def scale_step(stream: Any, width: int, height: int, plan: PicturePlan | None) -> Any:
    """Scale to a rendition's square-pixel size, 8-bit 4:2:0; ``plan`` only for the first
    scale from the source, where the matrix may change (lower sizes are scaled from it)."""
    options: dict[str, str] = {}
    if plan is not None and plan.bt601:
        options = {"in_color_matrix": "bt601", "out_color_matrix": BT709}
    return stream.filter("scale", width, height, **options).filter("setsar", 1)


def tagged_bt709(stream: Any) -> Any:
    """Mark the frames BT.709, limited range: encoders write what the frames say into the
    stream's colour description, and an untagged source's frames say nothing."""
    return stream.filter("setparams", color_primaries=BT709, color_trc=BT709, colorspace=BT709, range="tv")
