"""The pure parts of operations: cursors, wait estimates, SSE framing, the Flower launch rule,
the response models' status lists, and the submission rate setting."""

from __future__ import annotations

import json
import typing
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from api.responses import JobStatus, StageStatus
from models import JOB_STATUSES, STAGE_STATUSES
from scripts.flower import FlowerConfigError, flower_command
from services.config import Rate, Settings, parse_rate
from services.events import format_sse, parse_last_event_id
from services.operations import Cursor
from services.queue_stats import estimate_wait


def test_cursor_round_trips_and_refuses_anything_else() -> None:
    cursor = Cursor(datetime(2026, 11, 28, 5, 6, 7, 123456, tzinfo=UTC), uuid.uuid4())
    assert Cursor.decode(cursor.encode()) == cursor
    assert "=" not in cursor.encode()
    for bad in ("", "not-a-cursor", "W10", "WyJ4IiwgInkiXQ"):
        with pytest.raises(ValueError):
            Cursor.decode(bad)


@pytest.mark.parametrize(
    ("ahead", "running", "mean", "expected"),
    [
        (0, 0, 10.0, 0.0),  # a free slot takes it now
        (3, 0, 10.0, 30.0),
        (3, 1, 10.0, 40.0),
        (4, 2, 10.0, 30.0),
        (5, 1, None, None),  # nothing finished recently: no estimate
    ],
)
def test_estimated_wait(ahead: int, running: int, mean: float | None, expected: float | None) -> None:
    assert estimate_wait(ahead, running, mean) == expected


def test_sse_message_is_one_json_line_per_event() -> None:
    message = format_sse(42, "stage.progress", {"progress": 12.5, "note": "two\nlines"})
    lines = message.split("\n")
    assert lines[:2] == ["id: 42", "event: stage.progress"]
    assert lines[2].startswith("data: ") and json.loads(lines[2][6:])["note"] == "two\nlines"
    assert message.endswith("\n\n") and message.count("\n") == 4


@pytest.mark.parametrize(("header", "expected"), [(None, 0), ("", 0), ("17", 17), ("-3", 0), ("x", 0)])
def test_last_event_id(header: str | None, expected: int) -> None:
    assert parse_last_event_id(header) == expected


def test_status_literals_match_the_models() -> None:
    assert set(typing.get_args(JobStatus)) == set(JOB_STATUSES)
    assert set(typing.get_args(StageStatus)) == set(STAGE_STATUSES)


def test_flower_needs_credentials_unless_on_loopback() -> None:
    args = flower_command({"FLOWER_ADDRESS": "127.0.0.1"})
    assert "--address=127.0.0.1" in args and not any("basic" in arg for arg in args)
    assert "--address=::1" in flower_command({"FLOWER_ADDRESS": "::1"})
    assert "--address=0.0.0.0" in flower_command({"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "a:b"})
    for env in (
        {"FLOWER_ADDRESS": "0.0.0.0"},
        {"FLOWER_ADDRESS": "10.1.2.3", "FLOWER_BASIC_AUTH": "nopassword"},
    ):
        with pytest.raises(FlowerConfigError):
            flower_command(env)
    # The password stays in the environment, which Flower reads itself: never on argv.
    assert "s3cret" not in " ".join(flower_command({"FLOWER_BASIC_AUTH": "admin:s3cret"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120/minute", Rate(120, 60)),
        ("2 per hour", Rate(2, 3600)),
        ("10/5 minutes", Rate(10, 300)),
        ("5000 per Day", Rate(5000, 86400)),
    ],
)
def test_submit_rate_is_parsed(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "120", "0/minute", "ten/minute", "5/fortnight", "5/minute; 1/second"])
def test_a_rate_that_cannot_be_read_stops_the_settings(text: str) -> None:
    with pytest.raises(ValidationError, match="is not a rate"):
        Settings(submit_rate_limit=text)
