"""Captions from a transcript: a WebVTT subtitle rendition added to a published HLS stream.

The text decisions (cues, playlists, the master's new lines) are pure functions; publishing
goes through services.publishing, which uploads the master last.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.media.playlists import SUBTITLE_GROUP, SubtitleEntry, subtitle_line
from services.publishing import LocalFolder, publish_tree
from services.storage import Delivery

GROUP_ID = SUBTITLE_GROUP
SUBTITLES_DIR = "subtitles"
# MPEG-TS timestamps tick at 90 kHz; X-TIMESTAMP-MAP states cue times in that clock.
MPEGTS_CLOCK = 90_000
# A cue the model gave no length still has to stay on screen long enough to be read.
MIN_CUE_SECONDS = 1.0
LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class CaptionTrack:
    language: str  # BCP 47
    name: str  # for people, in the player's menu
    playlist_uri: str  # relative to the master


def language_tag(value: str | None) -> str:
    """A BCP 47 tag for the LANGUAGE attribute; "und" (undetermined) when the value is not one."""
    tag = (value or "").strip()
    return tag if LANGUAGE_TAG.match(tag) else "und"


def vtt_timestamp(seconds: float) -> str:
    millis = round(max(0.0, seconds) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line would end the cue and "-->" would start a new one; & and < are markup.
    lines = [line.strip() for line in text.replace("&", "&amp;").replace("<", "&lt;").splitlines()]
    return "\n".join(line for line in lines if line).replace("-->", "->")


def make_cues(segments: Sequence[dict[str, Any]], duration: float) -> list[Cue]:
    """Cues in time order, inside [0, duration], each at least readable, empty text dropped."""
    cues = []
    for segment in sorted(segments, key=lambda s: float(s["start"])):
        text = _cue_text(str(segment.get("text", "")))
        start = min(max(0.0, float(segment["start"])), duration)
        end = min(max(float(segment["end"]), start + MIN_CUE_SECONDS), duration)
        if text and end > start:
            cues.append(Cue(start, end, text))
    return cues


def _timestamp_map(mpegts_start: float) -> str:
    return f"X-TIMESTAMP-MAP=MPEGTS:{round(mpegts_start * MPEGTS_CLOCK)},LOCAL:00:00:00.000"


def build_webvtt(cues: Sequence[Cue], *, mpegts_start: float | None) -> str:
    """A WebVTT file; with MPEG-TS segments, X-TIMESTAMP-MAP ties cue time 0 to the first
    segment's first timestamp (ffmpeg's TS muxer does not start at 0)."""
    lines = ["WEBVTT"]
    if mpegts_start is not None:
        lines.append(_timestamp_map(mpegts_start))
    lines.append("")
    for cue in cues:
        lines += [f"{vtt_timestamp(cue.start)} --> {vtt_timestamp(cue.end)}", cue.text, ""]
    return "\n".join(lines)


def with_timestamp_map(vtt: str, mpegts_start: float | None) -> str:
    """A WebVTT file ffmpeg wrote (a source's subtitle track), tied to MPEG-TS segments the
    way build_webvtt ties generated captions: the map goes into the header, after WEBVTT."""
    if mpegts_start is None:
        return vtt
    header, newline, rest = vtt.lstrip("\ufeff").partition("\n")
    return f"{header}\n{_timestamp_map(mpegts_start)}{newline}{rest}"


def subtitle_playlist(vtt_uri: str, duration: float) -> str:
    """A VOD media playlist holding the whole WebVTT file as its one segment."""
    return "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{max(1, math.ceil(duration))}",
            "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-PLAYLIST-TYPE:VOD",
            f"#EXTINF:{duration:.3f},",
            vtt_uri,
            "#EXT-X-ENDLIST",
            "",
        ]
    )


def add_subtitles(master: str, tracks: Sequence[CaptionTrack]) -> str:
    """The master playlist with one EXT-X-MEDIA per generated track, in the subtitle group
    that the source's own subtitle tracks (if any) are already in, and every variant
    pointing at the group. The first generated track is the default unless a source track
    already is.

    Generated tracks a previous run added are replaced, so running it twice gives the same
    master; the source's tracks are kept as they are."""
    head: list[str] = []
    body: list[str] = []
    kept_subtitles = False
    source_default = False
    taken: set[str] = set()
    for line in master.splitlines():
        if line.startswith("#EXT-X-MEDIA:") and "TYPE=SUBTITLES" in line:
            if f'URI="{SUBTITLES_DIR}/' in line:
                continue
            kept_subtitles = True
            source_default = source_default or "DEFAULT=YES" in line
            taken.update(re.findall(r'NAME="([^"]*)"', line))
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = re.sub(r',SUBTITLES="[^"]*"', "", line)
            line = f'{attributes},SUBTITLES="{GROUP_ID}"' if tracks or kept_subtitles else attributes
        (body if body or line.startswith("#EXT-X-STREAM-INF:") else head).append(line)
    media = [
        subtitle_line(
            SubtitleEntry(
                track.language,
                # NAME is unique in a group: a source track may already be called "English".
                f"{track.name} (captions)" if track.name in taken else track.name,
                track.playlist_uri,
                default=i == 0 and not source_default,
            )
        )
        for i, track in enumerate(tracks)
    ]
    return "\n".join(head + media + body) + "\n"


def first_segment_start(media_playlist: Path) -> float | None:
    """The first timestamp of an MPEG-TS rendition's first segment; None for other segment types."""
    uri = next(
        (line for line in media_playlist.read_text().splitlines() if line and not line.startswith("#")), None
    )
    if uri is None or not uri.endswith(".ts"):
        return None
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-print_format", "json",
         "-show_entries", "format=start_time", str(media_playlist.parent / uri)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return float(json.loads(probed.stdout)["format"]["start_time"])


def publish_captions(
    delivery: Delivery,
    *,
    master: str,
    out_dir: Path,
    prefix: str,
    cues: Sequence[Cue],
    language: str,
    name: str,
    duration: float,
    mpegts_start: float | None,
) -> list[dict[str, str]]:
    """Write the subtitle rendition and the new master (from `master`, the transcode's) into
    out_dir and publish them under the job's prefix; the caption list for the job's result."""
    vtt = build_webvtt(cues, mpegts_start=mpegts_start)
    # The file name carries its content hash: segments are cached as immutable, and a re-run
    # of the analysis may write different captions.
    vtt_name = f"{language}-{hashlib.sha256(vtt.encode()).hexdigest()[:12]}.vtt"
    track = CaptionTrack(language, name, f"{SUBTITLES_DIR}/{language}.m3u8")
    subtitles = out_dir / SUBTITLES_DIR
    subtitles.mkdir(parents=True, exist_ok=True)
    (subtitles / vtt_name).write_text(vtt)
    (out_dir / track.playlist_uri).write_text(subtitle_playlist(vtt_name, duration))
    (out_dir / "master.m3u8").write_text(add_subtitles(master, [track]))
    publish_tree(delivery, LocalFolder(out_dir, delivery.multipart_threshold), prefix)
    # Paths in the job's published folder, as the job's result names every file.
    return [
        {
            "language": language,
            "name": name,
            "url": f"{SUBTITLES_DIR}/{vtt_name}",
            "playlist_url": track.playlist_uri,
        }
    ]
