"""The harness of the fault-injection scenarios: submit many small jobs, inject a fault, then
prove nothing was lost and nothing was done twice. "Done twice" is counted from executions:
each claim of a stage is a row in stage_attempts, and one whose body ran to its end has
body_finished_at, whether or not its result was then recorded."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import m3u8
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import StageAttempt
from tests.conftest import TEST_ROOT
from tests.fixtures import ApiClient, wait_until

WORK_STAGES = ("fetch", "transcode", "upload", "analyze")
LONG = os.environ.get("CHAOS_LONG") == "1"
JOBS_PER_SCENARIO = 60 if LONG else 20


@dataclass
class Summary:
    scenario: str
    jobs: int
    succeeded: int
    lost: int
    completed_twice: int
    seconds: float

    def line(self) -> str:
        return (
            f"chaos {self.scenario}: jobs={self.jobs} succeeded={self.succeeded} lost={self.lost} "
            f"stage bodies completed twice={self.completed_twice} seconds={self.seconds:.1f}"
        )


def submit(client: ApiClient, clip: Path, count: int, options: dict[str, Any] | None = None) -> list[str]:
    ids = []
    for _ in range(count):
        answer = client.upload(clip, {"renditions": ["240p"], **(options or {})})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def job_status(client: ApiClient, job_id: str) -> dict[str, Any] | None:
    """The job, or None while the API cannot answer (a database restart, say)."""
    try:
        answer = client.get(f"/api/v1/jobs/{job_id}")
    except requests.RequestException:
        return None
    return answer.json() if answer.status_code == 200 else None


def wait_all_ended(client: ApiClient, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    ended: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        for job_id in ids:
            if job_id in ended:
                continue
            job = job_status(client, job_id)
            if job is not None and job["status"] in ("succeeded", "failed", "canceled"):
                ended[job_id] = job
        return len(ended) == len(ids)

    wait_until(all_ended, timeout=timeout, interval=0.5, what=f"{len(ids)} jobs to end")
    return ended


def stage_completions(sessions: sessionmaker[Session], ids: list[str]) -> Counter[tuple[str, str]]:
    """How many attempts of each (job, stage) ran their body to the end."""
    with sessions() as session:
        rows = session.execute(
            select(StageAttempt.job_id, StageAttempt.stage, func.count())
            .where(
                StageAttempt.job_id.in_([uuid.UUID(i) for i in ids]),
                StageAttempt.body_finished_at.is_not(None),
            )
            .group_by(StageAttempt.job_id, StageAttempt.stage)
        ).all()
    return Counter({(str(job_id), str(stage)): int(count) for job_id, stage, count in rows})


def assert_playlists_complete(job: dict[str, Any]) -> None:
    master = m3u8.loads(requests.get(job["result"]["playback_url"], timeout=10).text)
    assert master.playlists, f"job {job['id']}: empty master playlist"
    for variant in master.playlists:
        media = m3u8.loads(requests.get(variant.uri, timeout=10).text)
        assert media.is_endlist and media.segments, f"job {job['id']}: incomplete playlist"
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets",
             "-of", "json", variant.uri],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert probe.returncode == 0, f"job {job['id']}: undecodable rendition: {probe.stderr[-500:]}"
        packets = [int(s.get("nb_read_packets", 0)) for s in json.loads(probe.stdout)["streams"]]
        assert packets and all(count > 0 for count in packets)


def orphan_ffmpegs() -> list[int]:
    """ffmpeg processes still working on this suite's files."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"ffmpeg") and str(TEST_ROOT).encode() in b" ".join(cmdline):
            found.append(int(entry.name))
    return found


def verify(
    scenario: str,
    client: ApiClient,
    sessions: sessionmaker[Session],
    ids: list[str],
    started: float,
    timeout: float,
) -> Summary:
    jobs = wait_all_ended(client, ids, timeout)
    completions = stage_completions(sessions, ids)
    summary = Summary(
        scenario=scenario,
        jobs=len(ids),
        succeeded=sum(1 for job in jobs.values() if job["status"] == "succeeded"),
        lost=sum(1 for job in jobs.values() if job["status"] != "succeeded"),
        completed_twice=sum(1 for count in completions.values() if count > 1),
        seconds=time.monotonic() - started,
    )
    print(summary.line())
    failed = {job_id: job["error"] for job_id, job in jobs.items() if job["status"] != "succeeded"}
    assert not failed, f"{scenario}: jobs did not succeed: {failed}"
    for job_id in ids:
        for stage in WORK_STAGES:
            assert completions[(job_id, stage)] == 1, (
                f"{scenario}: {stage} of {job_id} completed {completions[(job_id, stage)]} times"
            )
    for job in jobs.values():
        assert_playlists_complete(job)
    wait_until(lambda: not orphan_ffmpegs(), timeout=10, what="no ffmpeg left running")
    return summary
