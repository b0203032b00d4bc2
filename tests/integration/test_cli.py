"""The CLI as a user runs it: `flask --app api submit …` against a live API over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import REPO, ApiClient, WorkerProcess
from tests.media import make_clip

pytestmark = pytest.mark.integration


def flask_cli(api_url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"CONVEYOR_API_URL": api_url, "CONVEYOR_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | env,
    )  # fmt: skip


def test_submit_follow_prints_the_playback_url(
    client: ApiClient, api_url: str, api_key: str, workers: WorkerProcess, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "cli.mp4", seconds=1)
    done = flask_cli(api_url, api_key, "submit", str(clip), "--renditions", "240p", "--follow")
    assert done.returncode == 0, done.stderr
    playback_url = done.stdout.strip().splitlines()[-1]
    assert playback_url.startswith("http") and "master.m3u8" in playback_url
    assert "upload cli.mp4" in done.stderr  # the byte progress bar
    assert "transcode" in done.stderr  # a bar per stage

    listed = flask_cli(api_url, api_key, "jobs", "--status", "succeeded")
    assert listed.returncode == 0, listed.stderr


def test_submit_of_a_bad_file_exits_non_zero_with_the_code(
    api_url: str, api_key: str, workers: WorkerProcess, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    done = flask_cli(api_url, api_key, "submit", str(bad), "--follow")
    assert done.returncode == 1
    assert "invalid_media" in done.stderr


def test_errors_from_the_api_are_shown_plainly(api_url: str, api_key: str) -> None:
    done = flask_cli(api_url, api_key, "job", "00000000-0000-0000-0000-000000000000")
    assert done.returncode != 0
    assert "not_found" in done.stderr
    done = flask_cli(api_url, api_key, "submit", "/no/such/file.mp4")
    assert done.returncode != 0
    assert "neither a file nor an http(s) URL" in done.stderr
