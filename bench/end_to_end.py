"""One job through all five stages versus the bare ffmpeg commands it runs, on the same input.

Run from the repository root: ``.venv/bin/python -m bench.end_to_end [--seconds 20] [--repeat 3]``.

End-to-end wall: from the start of ``POST /api/v1/uploads`` to the arrival of the job's signed
webhook (so upload, fetch, transcode, upload to S3, local analysis and notify, every queue hop
and database write between them). The baseline is the transcode stage's own ffmpeg command
(``build_hls_command`` from the same probe, ladder, storyboard plan and settings, run by
``run_ffmpeg``) and, measured apart, the local analysis's ffmpeg command, both run bare in
this process. Runs alternate (bare, then pipeline) so drift hits both alike; the fastest of
each is kept, being the one least disturbed by other load.

* long source: ratio = end-to-end wall / bare transcode wall, target <= 1.10;
* 1 s clip: orchestration overhead = end-to-end wall - bare transcode wall - bare analysis
  wall, i.e. everything the job costs beyond the two ffmpeg commands it cannot avoid
  (probes, HTTP, S3, database, queues). Target <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.harness import Stack, WebhookReceiver, bare_analysis, bare_transcode, make_clip, wait_until
from bench.report import Figure, at_most, context, report
from services.config import get_settings

RATIO_TARGET = 1.10
OVERHEAD_TARGET_SECONDS = 0.5


@dataclass(frozen=True)
class JobRun:
    wall: float
    upload_request: float
    stages: list[tuple[str, float, float]]  # name, waited in queue, ran (database clock)


def run_job(stack: Stack, key: str, receiver: WebhookReceiver, source: Path, timeout: float) -> JobRun:
    options = {"webhook_url": receiver.url, "analysis": {"backend": "local"}}
    started = time.perf_counter()
    with source.open("rb") as body:
        response = requests.post(
            f"{stack.api_url}/api/v1/uploads",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (source.name, body, "video/mp4")},
            data={"options": json.dumps(options)},
            timeout=120,
        )
    upload_request = time.perf_counter() - started
    response.raise_for_status()
    job_id = response.json()["id"]
    try:
        arrived = receiver.wait_for(job_id, timeout)
    except TimeoutError:
        stages = stack.query(
            "SELECT name, status, attempts, error_code FROM job_stages WHERE job_id = %s ORDER BY position",
            job_id,
        )
        raise TimeoutError(f"job {job_id} sent no webhook within {timeout:g} s; stages: {stages}") from None
    # notify records its own end just after the receiver answered; the breakdown wants it.
    wait_until(
        lambda: stack.query(
            "SELECT finished_at FROM job_stages WHERE job_id = %s AND name = 'notify'", job_id
        )[0][0],
        timeout=10,
        what="the notify stage to be recorded",
    )
    status = stack.query("SELECT status, error_message FROM jobs WHERE id = %s", job_id)[0]
    if status[0] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {status[0]}: {status[1]}")
    return JobRun(arrived - started, upload_request, stage_times(stack, job_id))


def stage_times(stack: Stack, job_id: str) -> list[tuple[str, float, float]]:
    rows = stack.query(
        "SELECT s.name, s.started_at, s.finished_at, j.created_at FROM job_stages s JOIN jobs j"
        " ON j.id = s.job_id WHERE s.job_id = %s ORDER BY s.position",
        job_id,
    )
    times, previous = [], rows[0][3]
    for name, started, finished, _ in rows:
        if started is None or finished is None:
            continue
        times.append((name, (started - previous).total_seconds(), (finished - started).total_seconds()))
        previous = finished
    return times


def breakdown(run: JobRun) -> str:
    parts = [f"{name} {waited:.2f}+{ran:.2f}" for name, waited, ran in run.stages]
    return f"upload request {run.upload_request:.2f} s; stages (queue wait + run, s): " + ", ".join(parts)


def measure(
    stack: Stack, key: str, receiver: WebhookReceiver, source: Path, repeat: int, timeout: float
) -> tuple[float, float, JobRun]:
    transcodes, analyses, jobs = [], [], []
    for round_ in range(repeat):
        transcodes.append(bare_transcode(source, stack.root / "bare-hls"))
        analyses.append(bare_analysis(source, stack.root / "bare-hls"))
        jobs.append(run_job(stack, key, receiver, source, timeout))
        print(
            f"  {source.name} #{round_ + 1}: bare transcode {transcodes[-1]:.2f} s, bare analysis"
            f" {analyses[-1]:.2f} s, end to end {jobs[-1].wall:.2f} s",
            flush=True,
        )
    return min(transcodes), min(analyses), min(jobs, key=lambda job: job.wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20, help="length of the long 1080p30 source")
    parser.add_argument("--repeat", type=int, default=3, help="rounds on the long source; the best is kept")
    parser.add_argument("--clip-repeat", type=int, default=5, help="rounds on the 1 s clip")
    parser.add_argument(
        "--redis-db", type=int, default=None, help="Redis database number (default: an empty one)"
    )
    parser.add_argument("--results", default=None, help="append the markdown section here")
    args = parser.parse_args()

    with Stack("e2e", redis_db=args.redis_db) as stack:
        media = stack.root / "media"
        media.mkdir()
        print(f"generating a {args.seconds:g} s and a 1 s 1080p30 source with audio…", flush=True)
        long_source = make_clip(media / "long.mp4", seconds=args.seconds)
        clip = make_clip(media / "clip.mp4", seconds=1)
        stack.start_api()
        stack.start_workers()
        key = stack.create_key()
        receiver = WebhookReceiver()
        try:
            # Workers open their database, S3 and broker connections on their first task; a
            # running service has done that long ago, so one job warms them before timing.
            run_job(stack, key, receiver, clip, timeout=300)
            clip_transcode, clip_analysis, clip_job = measure(
                stack, key, receiver, clip, args.clip_repeat, timeout=300
            )
            long_transcode, long_analysis, long_job = measure(
                stack, key, receiver, long_source, args.repeat, timeout=600 + 20 * args.seconds
            )
        finally:
            receiver.close()

    settings = get_settings()
    overhead = clip_job.wall - clip_transcode - clip_analysis
    figures: list[Figure] = [
        context(f"{args.seconds:g} s source: bare transcode wall", long_transcode, "s"),
        context(f"{args.seconds:g} s source: bare analysis wall", long_analysis, "s"),
        context(f"{args.seconds:g} s source: end-to-end wall", long_job.wall, "s"),
        at_most(
            f"{args.seconds:g} s source: end-to-end / bare transcode",
            long_job.wall / long_transcode,
            "ratio",
            RATIO_TARGET,
        ),
        context(
            f"{args.seconds:g} s source: end-to-end / (transcode + analysis)",
            long_job.wall / (long_transcode + long_analysis),
            "ratio",
        ),
        context("1 s clip: bare transcode wall", clip_transcode, "s"),
        context("1 s clip: bare analysis wall", clip_analysis, "s"),
        context("1 s clip: end-to-end wall", clip_job.wall, "s"),
        context("1 s clip: end-to-end - bare transcode", clip_job.wall - clip_transcode, "s"),
        at_most("1 s clip: orchestration overhead", overhead, "s", OVERHEAD_TARGET_SECONDS),
    ]
    notes = [
        f"1920x1080 @ 30 fps H.264 + AAC sources, every rung up to 1080p, preset {settings.x264_preset},"
        f" {settings.segment_seconds} s segments, local analysis, webhook to a local receiver",
        f"best of {args.repeat} rounds (long source) and {args.clip_repeat} (clip), after one warm-up job",
        "end-to-end wall: POST /api/v1/uploads start -> webhook received; overhead: that minus the"
        " bare transcode and bare analysis ffmpeg walls",
        f"long source, best run: {breakdown(long_job)}",
        f"1 s clip, best run: {breakdown(clip_job)}",
    ]
    report("bench/end_to_end.py: the pipeline against bare ffmpeg", notes, figures, args.results)


if __name__ == "__main__":
    main()
