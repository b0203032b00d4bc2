"""Job options as the API validates them: codecs, rate control, and the segments they need."""

from __future__ import annotations

import pytest

from api.errors import ApiError
from api.schemas import parse_options


def test_codecs_and_rate_control_are_accepted_and_hevc_chooses_fmp4() -> None:
    assert parse_options({"video_codecs": ["h264", "hevc", "h264"], "rate_control": "bitrate"}) == {
        "video_codecs": ["h264", "hevc"],
        "rate_control": "bitrate",
        "segment_format": "fmp4",
    }
    assert parse_options({"video_codecs": ["h264"]}) == {"video_codecs": ["h264"]}
    assert parse_options({"video_codecs": ["av1"], "segment_format": "fmp4"})["segment_format"] == "fmp4"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"video_codecs": ["vp9"]}, "video_codecs.0: Input should be 'h264', 'hevc' or 'av1'"),
        ({"video_codecs": []}, "video_codecs: List should have at least 1 item"),
        ({"rate_control": "cbr"}, "rate_control: Input should be 'capped_crf' or 'bitrate'"),
        ({"video_codecs": ["hevc"], "segment_format": "ts"}, "need segment_format fmp4"),
    ],
)
def test_bad_codec_options_are_refused_with_a_clear_message(options: dict[str, object], says: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_options(options)
    assert refused.value.code == "invalid_options"
    assert says in refused.value.message
