"""One job through all five stages versus the bare ffmpeg commands it runs, on the same input, on
both workspaces: the object store (the default: hosts share nothing) and a file:// folder.

Run from the repository root: ``.venv/bin/python -m bench.end_to_end [--seconds 20] [--repeat 3]``.

End-to-end wall: from the start of ``POST /api/v1/uploads`` to the arrival of the job's signed
webhook (so upload, fetch, transcode, upload to S3, local analysis and notify, every queue hop
and database write between them). Two deployments run side by side, each an API and one
worker per queue on a Redis database of its own: one with ``WORKSPACE_URL=s3://…`` (a bucket
of the same SeaweedFS the delivery bucket is on), one with ``WORKSPACE_URL=file://…``. The
baseline is the transcode stage's own ffmpeg command (``build_hls_command`` from the same
probe, ladder, storyboard plan and settings, run by ``run_ffmpeg``) and, measured apart, the
local analysis's ffmpeg command, both run bare in this process. Runs alternate (bare, then a
job on each workspace) so drift hits all alike; the fastest of each is kept, being the one
least disturbed by other load.

* long source: ratio = end-to-end wall / bare transcode wall, target <= 1.10 (each workspace);
  and the object store's wall / the folder's, target <= 1.05;
* 1 s clip: orchestration overhead = end-to-end wall - bare transcode wall - bare analysis
  wall, i.e. everything the job costs beyond the two ffmpeg commands it cannot avoid
  (probes, HTTP, S3, database, queues). Target <= 0.5 s;
* bytes moved per job in and out of each bucket, as the S3 server counts them (SeaweedFS's
  per-bucket traffic counters), and its server-side copies: one extra job per workspace.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.harness import (
    WORKSPACE_BUCKET,
    Stack,
    WebhookReceiver,
    bare_analysis,
    bare_transcode,
    make_clip,
    wait_until,
)
from bench.report import Figure, at_most, context, report
from bench.traffic import Traffic
from services.config import get_settings

RATIO_TARGET = 1.10
WORKSPACE_RATIO_TARGET = 1.05
OVERHEAD_TARGET_SECONDS = 0.5
WORKSPACES = ("s3", "file")
MB = 1_000_000


@dataclass(frozen=True)
class JobRun:
    wall: float
    upload_request: float
    stages: list[tuple[str, float, float]]  # name, waited in queue, ran (database clock)


@dataclass(frozen=True)
class Deployment:
    name: str
    api_url: str


def run_job(
    stack: Stack,
    api: str,
    key: str,
    receiver: WebhookReceiver,
    source: Path,
    timeout: float,
    options: dict[str, object] | None = None,
) -> JobRun:
    options = {"webhook_url": receiver.url, "analysis": {"backend": "local"}} | (options or {})
    started = time.perf_counter()
    with source.open("rb") as body:
        response = requests.post(
            f"{api}/api/v1/uploads",
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


@dataclass(frozen=True)
class Measured:
    transcode: float
    analysis: float
    jobs: dict[str, JobRun]  # the best job of each workspace


def measure(
    stack: Stack,
    deployments: list[Deployment],
    key: str,
    receiver: WebhookReceiver,
    source: Path,
    repeat: int,
    timeout: float,
) -> Measured:
    transcodes, analyses = [], []
    jobs: dict[str, list[JobRun]] = {deployment.name: [] for deployment in deployments}
    for round_ in range(repeat):
        transcodes.append(bare_transcode(source, stack.root / "bare-hls"))
        analyses.append(bare_analysis(source, stack.root / "bare-hls"))
        # Each round starts with the other workspace, so neither always runs right after ffmpeg.
        for deployment in deployments[round_ % 2 :] + deployments[: round_ % 2]:
            jobs[deployment.name].append(run_job(stack, deployment.api_url, key, receiver, source, timeout))
        walls = ", ".join(f"{name} {runs[-1].wall:.2f} s" for name, runs in jobs.items())
        print(
            f"  {source.name} #{round_ + 1}: bare transcode {transcodes[-1]:.2f} s, bare analysis"
            f" {analyses[-1]:.2f} s, end to end: {walls}",
            flush=True,
        )
    best = {name: min(runs, key=lambda job: job.wall) for name, runs in jobs.items()}
    return Measured(min(transcodes), min(analyses), best)


def traffic_of_one_job(
    stack: Stack, deployment: Deployment, key: str, receiver: WebhookReceiver, source: Path, timeout: float
) -> dict[str, Traffic]:
    """What one job moves in and out of each bucket (nothing else runs meanwhile)."""
    before = stack.bucket_traffic()
    run_job(stack, deployment.api_url, key, receiver, source, timeout)
    after = stack.bucket_traffic()
    return {bucket: after[bucket].since(before.get(bucket, Traffic())) for bucket in after if bucket}


def describe_traffic(name: str, traffic: dict[str, Traffic]) -> str:
    parts = [
        f"{bucket}: in {moved.received / MB:.2f} MB, out {moved.sent / MB:.2f} MB,"
        f" {moved.copies:.0f} server-side copies"
        for bucket, moved in sorted(traffic.items())
        if moved.received or moved.sent or moved.copies
    ]
    return f"{name} workspace, bytes per job: " + ("; ".join(parts) or "none")


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
        # The folder deployment gets a Redis database of its own: its workers must never take
        # the other deployment's messages (nor the other way round).
        folder_env = {
            "WORKSPACE_URL": stack.file_workspace_url,
            "REDIS_URL": stack.another_redis_url(),
        }
        deployments = [
            Deployment("s3", stack.start_api()),
            Deployment("file", stack.start_api(folder_env, name="api-file")),
        ]
        stack.start_workers()
        stack.start_workers(env=folder_env, tag="-file")
        key = stack.create_key()
        receiver = WebhookReceiver()
        try:
            # Workers open their database, S3 and broker connections on their first task; a
            # running service has done that long ago, so one job each warms them before timing.
            for deployment in deployments:
                run_job(stack, deployment.api_url, key, receiver, clip, timeout=300)
            clip_figures = measure(stack, deployments, key, receiver, clip, args.clip_repeat, timeout=300)
            long_timeout = 600 + 20 * args.seconds
            long_figures = measure(stack, deployments, key, receiver, long_source, args.repeat, long_timeout)
            traffic = {
                deployment.name: traffic_of_one_job(
                    stack, deployment, key, receiver, long_source, long_timeout
                )
                for deployment in deployments
            }
        finally:
            receiver.close()

    settings = get_settings()
    long_name = f"{args.seconds:g} s source"
    figures: list[Figure] = [
        context(f"{long_name}: bare transcode wall", long_figures.transcode, "s"),
        context(f"{long_name}: bare analysis wall", long_figures.analysis, "s"),
    ]
    for name in WORKSPACES:
        job = long_figures.jobs[name]
        figures += [
            context(f"{long_name}, {name} workspace: end-to-end wall", job.wall, "s"),
            at_most(
                f"{long_name}, {name} workspace: end-to-end / bare transcode",
                job.wall / long_figures.transcode,
                "ratio",
                RATIO_TARGET,
            ),
        ]
    figures.append(
        at_most(
            f"{long_name}: s3 workspace wall / file workspace wall",
            long_figures.jobs["s3"].wall / long_figures.jobs["file"].wall,
            "ratio",
            WORKSPACE_RATIO_TARGET,
        )
    )
    figures += [
        context("1 s clip: bare transcode wall", clip_figures.transcode, "s"),
        context("1 s clip: bare analysis wall", clip_figures.analysis, "s"),
    ]
    for name in WORKSPACES:
        job = clip_figures.jobs[name]
        overhead = job.wall - clip_figures.transcode - clip_figures.analysis
        figures += [
            context(f"1 s clip, {name} workspace: end-to-end wall", job.wall, "s"),
            at_most(
                f"1 s clip, {name} workspace: orchestration overhead", overhead, "s", OVERHEAD_TARGET_SECONDS
            ),
        ]
    figures.append(
        context(
            "1 s clip: s3 workspace wall / file workspace wall",
            clip_figures.jobs["s3"].wall / clip_figures.jobs["file"].wall,
            "ratio",
        )
    )
    for name in WORKSPACES:
        moved = traffic[name]
        workspace_bucket = moved.get(WORKSPACE_BUCKET, Traffic())
        delivery = moved.get(settings.s3_bucket, Traffic())
        figures += [
            context(
                f"{long_name}, {name} workspace: workspace bucket in", workspace_bucket.received / MB, "MB"
            ),
            context(f"{long_name}, {name} workspace: workspace bucket out", workspace_bucket.sent / MB, "MB"),
            context(f"{long_name}, {name} workspace: delivery bucket in", delivery.received / MB, "MB"),
            context(f"{long_name}, {name} workspace: delivery bucket out", delivery.sent / MB, "MB"),
        ]
    notes = [
        f"1920x1080 @ 30 fps H.264 + AAC sources, every rung up to 1080p, preset {settings.x264_preset},"
        f" {settings.segment_seconds} s segments, local analysis, webhook to a local receiver",
        "two deployments side by side (an API and one worker per queue each, own Redis database):"
        f" WORKSPACE_URL=s3://{WORKSPACE_BUCKET}/work on the delivery bucket's SeaweedFS, and file://",
        f"best of {args.repeat} rounds (long source) and {args.clip_repeat} (clip) per workspace, after one"
        " warm-up job each; rounds alternate which workspace goes first",
        "end-to-end wall: POST /api/v1/uploads start -> webhook received; overhead: that minus the"
        " bare transcode and bare analysis ffmpeg walls",
        *(
            f"long source, {name} workspace, best run: {breakdown(long_figures.jobs[name])}"
            for name in WORKSPACES
        ),
        *(
            f"1 s clip, {name} workspace, best run: {breakdown(clip_figures.jobs[name])}"
            for name in WORKSPACES
        ),
        *(describe_traffic(name, traffic[name]) for name in WORKSPACES),
        "bytes: what crossed the S3 API per bucket (SeaweedFS counters), one more long-source job per"
        " workspace; a server-side copy moves no byte through a worker and counts as a copy, not as traffic",
    ]
    report(
        "bench/end_to_end.py: the pipeline against bare ffmpeg, on both workspaces",
        notes,
        figures,
        args.results,
    )


if __name__ == "__main__":
    main()
