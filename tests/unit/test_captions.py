"""Captions as text: WebVTT cues, the subtitle playlist and the master's new lines (no I/O)."""

from __future__ import annotations

import m3u8
import pytest

from services.captions import (
    CaptionTrack,
    Cue,
    add_subtitles,
    build_webvtt,
    language_tag,
    make_cues,
    subtitle_playlist,
    vtt_timestamp,
)

MASTER = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=1000000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p/index.m3u8
"""
ENGLISH = CaptionTrack("en", "English", "subtitles/en.m3u8")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00:00.000"), (1.5, "00:00:01.500"), (61.0004, "00:01:01.000"), (3725.25, "01:02:05.250")],
)
def test_vtt_timestamp(seconds: float, text: str) -> None:
    assert vtt_timestamp(seconds) == text


def test_cues_are_sorted_clamped_and_readable() -> None:
    cues = make_cues(
        [
            {"start": 5.0, "end": 7.5, "text": "second"},
            {"start": -1.0, "end": 0.2, "text": "first"},  # before the start, and too short
            {"start": 9.5, "end": 12.0, "text": "last"},  # past the end
            {"start": 3.0, "end": 4.0, "text": "   "},  # nothing to show
            {"start": 10.0, "end": 11.0, "text": "after the video"},
        ],
        duration=10.0,
    )
    assert cues == [Cue(0.0, 1.0, "first"), Cue(5.0, 7.5, "second"), Cue(9.5, 10.0, "last")]


def test_cue_text_cannot_break_the_file() -> None:
    [cue] = make_cues([{"start": 0, "end": 2, "text": "a --> b\n\n<i>x</i> & y"}], duration=5)
    assert cue.text == "a -> b\n&lt;i>x&lt;/i> &amp; y"


def test_webvtt_with_and_without_timestamp_map() -> None:
    cues = [Cue(0.2, 1.4, "Hello."), Cue(1.5, 2.8, "World.")]
    assert build_webvtt(cues, mpegts_start=1.4) == (
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n"
        "00:00:00.200 --> 00:00:01.400\nHello.\n\n00:00:01.500 --> 00:00:02.800\nWorld.\n"
    )
    assert build_webvtt(cues, mpegts_start=None).startswith("WEBVTT\n\n00:00:00.200 --> ")


def test_subtitle_playlist_is_one_vod_segment() -> None:
    playlist = m3u8.loads(subtitle_playlist("en-abc.vtt", 12.3))
    assert playlist.is_endlist
    assert playlist.playlist_type == "vod"
    assert playlist.target_duration == 13
    assert [(s.uri, s.duration) for s in playlist.segments] == [("en-abc.vtt", 12.3)]


def test_master_gets_the_media_and_every_variant_the_group() -> None:
    master = m3u8.loads(add_subtitles(MASTER, [ENGLISH]))
    [media] = master.media
    assert (media.type, media.group_id, media.language, media.name, media.uri) == (
        "SUBTITLES",
        "subs",
        "en",
        "English",
        "subtitles/en.m3u8",
    )
    assert media.default == "YES"
    assert [p.stream_info.subtitles for p in master.playlists] == ["subs", "subs"]
    assert [p.uri for p in master.playlists] == ["360p/index.m3u8", "720p/index.m3u8"]
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 360), (1280, 720)]


def test_adding_subtitles_twice_gives_the_same_master() -> None:
    once = add_subtitles(MASTER, [ENGLISH])
    assert add_subtitles(once, [ENGLISH]) == once
    assert add_subtitles(once, []) == MASTER


def test_track_name_cannot_close_the_attribute() -> None:
    text = add_subtitles(MASTER, [CaptionTrack("en", 'Eng"lish', "subtitles/en.m3u8")])
    assert 'NAME="English"' in text


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("en", "en"),
        ("pt-BR", "pt-BR"),
        ("zh-Hant", "zh-Hant"),
        ("English", "und"),
        ("", "und"),
        (None, "und"),
    ],
)
def test_language_tag(value: str | None, tag: str) -> None:
    assert language_tag(value) == tag


def test_generated_captions_join_the_sources_subtitles_in_one_group() -> None:
    with_source = MASTER.replace(
        "#EXT-X-STREAM-INF:BANDWIDTH=1000000",
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,'
        'AUTOSELECT=YES,URI="text-0/index.m3u8"\n#EXT-X-STREAM-INF:BANDWIDTH=1000000',
        1,
    ).replace('mp4a.40.2"', 'mp4a.40.2",SUBTITLES="subs"')
    text = add_subtitles(with_source, [ENGLISH])
    parsed = m3u8.loads(text)
    subs = [(m.uri, m.name, m.default) for m in parsed.media if m.type == "SUBTITLES"]
    # The source's track stays (and stays the default); the captions get a name of their own.
    assert subs == [
        ("text-0/index.m3u8", "English", "YES"),
        ("subtitles/en.m3u8", "English (captions)", "NO"),
    ]
    assert all(p.stream_info.subtitles == "subs" for p in parsed.playlists)
    assert text.count('SUBTITLES="subs"') == 2
    assert add_subtitles(text, [ENGLISH]) == text
    # Without captions the source's track still keeps every variant in the group.
    assert m3u8.loads(add_subtitles(with_source, [])).playlists[0].stream_info.subtitles == "subs"
