"""A DASH manifest beside the HLS master, for fMP4 (CMAF) output: the same init sections and
segments, listed a second time for DASH players. Pure: the renditions and their segment
lists (from the media playlists) in, MPD text out.

Each representation lists its segments explicitly (SegmentList, with a SegmentTimeline of
their measured durations) rather than as a URL template, so a signed delivery can give
every segment its own signed URL, as it does for HLS playlists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from services.media.ladder import AudioRendition, Rendition, SubtitleRendition
from services.media.playlists import AAC_LC, Bitrates, MediaPlaylist, video_codec

DASH_MANIFEST = "manifest.mpd"
TIMESCALE = 1000
# A whole WebVTT file is a few kB; DASH wants a bandwidth on every representation.
TEXT_BANDWIDTH = 256
CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"


@dataclass(frozen=True)
class Representation:
    """One rendition as DASH lists it: its folder, init section, segments and rates."""

    name: str
    init: str  # the init section's file name inside the rendition's folder
    playlist: MediaPlaylist
    bitrates: Bitrates


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _segments(rep: Representation, clock_start: float) -> list[str]:
    # A stitched transcode's segments keep the source's clock: the offset tells the player
    # which media time the period starts at.
    start = round(clock_start * TIMESCALE)
    offset = f' presentationTimeOffset="{start}"' if start else ""
    lines = [f'        <SegmentList timescale="{TIMESCALE}"{offset}>']
    lines.append(f"          <Initialization sourceURL={quoteattr(f'{rep.name}/{rep.init}')}/>")
    lines.append("          <SegmentTimeline>")
    for segment in rep.playlist.segments:
        length = round(segment.duration * TIMESCALE)
        lines.append(f'            <S t="{start}" d="{length}"/>')
        start += length
    lines.append("          </SegmentTimeline>")
    lines += [
        f"          <SegmentURL media={quoteattr(f'{rep.name}/{s.uri}')}/>" for s in rep.playlist.segments
    ]
    lines.append("        </SegmentList>")
    return lines


def write_dash_manifest(
    duration: float,
    segment_seconds: int,
    video: Sequence[tuple[Rendition, Representation]],
    audio: Sequence[tuple[AudioRendition, Representation]],
    subtitles: Sequence[tuple[SubtitleRendition, str]] = (),
    *,
    clock_start: float = 0.0,
) -> str:
    """A static MPD: one video adaptation set per codec (a player picks the codec it decodes,
    then switches sizes within it), one audio adaptation set per sound track, and one text
    adaptation set per subtitle track, its whole WebVTT file (``subtitles``: track, file URI).
    `clock_start` is the media time of the first segments (seconds)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"'
        ' profiles="urn:mpeg:dash:profile:isoff-live:2011"'
        f' mediaPresentationDuration="{_duration(duration)}" minBufferTime="{_duration(segment_seconds)}">',
        '  <Period id="0" start="PT0S">',
    ]
    adaptation = 0
    for codec in dict.fromkeys(rendition.codec for rendition, _ in video):
        lines.append(
            f'    <AdaptationSet id="{adaptation}" contentType="video" mimeType="video/mp4"'
            ' segmentAlignment="true" startWithSAP="1">'
        )
        for rendition, rep in video:
            if rendition.codec != codec:
                continue
            lines.append(
                f"      <Representation id={quoteattr(rendition.name)}"
                f" codecs={quoteattr(video_codec(rendition))}"
                f' bandwidth="{rep.bitrates.peak}" width="{rendition.width}" height="{rendition.height}"'
                f' frameRate="{rendition.fps:g}" sar="1:1">'
            )
            lines += _segments(rep, clock_start)
            lines.append("      </Representation>")
        lines.append("    </AdaptationSet>")
        adaptation += 1
    for track, rep in audio:
        language = f" lang={quoteattr(track.language)}" if track.language else ""
        lines.append(
            f'    <AdaptationSet id="{adaptation}" contentType="audio" mimeType="audio/mp4"{language}'
            ' segmentAlignment="true" startWithSAP="1">'
        )
        role = "main" if track.default else "dub"
        lines.append(f'      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="{role}"/>')
        lines.append(f"      <Label>{escape(track.title)}</Label>")
        lines.append(
            f'      <Representation id={quoteattr(track.name)} codecs="{AAC_LC}"'
            f' bandwidth="{rep.bitrates.peak}" audioSamplingRate="{track.sample_rate}">'
        )
        lines.append(
            f'        <AudioChannelConfiguration schemeIdUri="{CHANNEL_SCHEME}" value="{track.channels}"/>'
        )
        lines += _segments(rep, clock_start)
        lines.append("      </Representation>")
        lines.append("    </AdaptationSet>")
        adaptation += 1
    for text, vtt in subtitles:
        language = f" lang={quoteattr(text.language)}" if text.language else ""
        lines.append(
            f'    <AdaptationSet id="{adaptation}" contentType="text" mimeType="text/vtt"{language}>'
        )
        role = "forced-subtitle" if text.forced else "subtitle"
        lines.append(f'      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="{role}"/>')
        lines.append(f"      <Label>{escape(text.title)}</Label>")
        lines.append(f'      <Representation id={quoteattr(text.name)} bandwidth="{TEXT_BANDWIDTH}">')
        lines.append(f"        <BaseURL>{escape(vtt)}</BaseURL>")
        lines += ["      </Representation>", "    </AdaptationSet>"]
        adaptation += 1
    lines += ["  </Period>", "</MPD>", ""]
    return "\n".join(lines)
