"""Where a job's objects live: every process computes the same keys from ids alone."""

from __future__ import annotations

import uuid

import pytest

from models import STAGE_NAMES
from services.workspace.keys import (
    UPLOADED,
    attempt_prefix,
    check_key,
    folders_of,
    job_of,
    job_prefix,
    stage_prefix,
    upload_key,
)

JOB = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_every_attempt_has_a_prefix_of_its_own() -> None:
    assert attempt_prefix(JOB, "transcode", 1) == f"jobs/{JOB}/transcode/1/"
    prefixes = {attempt_prefix(JOB, stage, attempt) for stage in STAGE_NAMES for attempt in (1, 2, 3)}
    assert len(prefixes) == 15
    for prefix in prefixes:
        # No attempt's prefix holds another's: removing or listing one never reaches the rest.
        assert [other for other in prefixes if other.startswith(prefix)] == [prefix]
        assert prefix.startswith(stage_prefix(JOB, prefix.split("/")[2]))
    with pytest.raises(ValueError):
        attempt_prefix(JOB, "fetch", 0)


def test_uploads_live_apart_from_every_stage() -> None:
    # A retry removes the stages it runs again; the uploaded source must not go with them.
    assert UPLOADED not in STAGE_NAMES
    key = upload_key(JOB, "holiday clip.mp4")
    assert key == f"jobs/{JOB}/source/holiday_clip.mp4"
    assert not any(key.startswith(stage_prefix(JOB, stage)) for stage in STAGE_NAMES)


@pytest.mark.parametrize(
    ("client_name", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\film.mov", "film.mov"),
        ("..", "upload"),
        (".hidden", "hidden"),
        ("vidéo «final».mkv", "vid_o__final_.mkv"),
        ("", "upload"),
    ],
)
def test_a_clients_file_name_cannot_leave_its_folder(client_name: str, stored: str) -> None:
    key = upload_key(JOB, client_name)
    assert key == f"jobs/{JOB}/source/{stored}"
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/etc/passwd", "jobs/../x", "jobs//x", "jobs/./x", "a/..", "a b", 'a"b'])
def test_keys_that_could_escape_or_need_quoting_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_job_of_a_top_level_prefix() -> None:
    assert job_of(job_prefix(JOB)) == JOB
    assert job_of("jobs/not-a-uuid/") is None
    assert job_of(f"other/{JOB}/") is None


def test_folders_deepest_first_down_to_the_prefix() -> None:
    keys = [f"jobs/{JOB}/transcode/1/240p/seg_00000.ts", f"jobs/{JOB}/transcode/1/master.m3u8"]
    assert folders_of(keys, f"jobs/{JOB}/") == [
        f"jobs/{JOB}/transcode/1/240p/",
        f"jobs/{JOB}/transcode/1/",
        f"jobs/{JOB}/transcode/",
        f"jobs/{JOB}/",
    ]
