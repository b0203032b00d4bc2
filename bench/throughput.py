"""Many tiny jobs through the chain, and the API alone taking submissions.

Run from the repository root: ``.venv/bin/python -m bench.throughput [--jobs 200] [--api-seconds 10]``.

1. The API alone: ``POST /api/v1/jobs`` with a URL source (the job row committed and its
   chain sent to Redis, as in production) for ``--api-seconds`` from a concurrent client
   (``wrk`` when installed, else threads with ``requests.Session``), against gunicorn at its
   default worker count. No worker runs and the queues are purged afterwards, so nothing is
   fetched. Baseline: ``GET /livez`` on the same server, same client, same invocation.
   Target: >= 300 submissions/s. It runs twice, on a fresh server each time: how far the two
   differ shows how much to trust either.
2. The chain: ``--jobs`` uploads of a 1 s 320x240 clip, submitted at once, through all five
   stages (local analysis, a webhook to a local receiver) with one worker per queue at the
   Procfile's concurrency. Jobs per minute from the first ``created_at`` to the last
   ``finished_at`` in the database; latency per job is ``finished_at - created_at`` (under a
   burst, mostly time spent waiting in line). Baseline: the same clip's probe, bare transcode
   and bare analysis run one after another in this process (half before, half after the
   chain): the jobs per minute of one ffmpeg lane with no orchestration at all.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.harness import (
    Stack,
    WebhookReceiver,
    bare_analysis,
    bare_transcode,
    free_port,
    make_clip,
    wait_until,
)
from bench.report import Figure, at_least, context, report

SUBMISSIONS_TARGET = 300.0
CONNECTIONS = 16


@dataclass(frozen=True)
class Load:
    per_second: float
    requests: int
    bad: int  # answers that are not 2xx, and socket errors (a wrk timeout is 10 s)
    p50_ms: float
    p99_ms: float
    client: str


def _wrk_ms(text: str, quantile: str) -> float:
    match = re.search(rf"^\s*{quantile}%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    if match is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
    return float(match[1]) * scale


def load_with_wrk(url: str, seconds: float, work: Path, body: str | None, key: str) -> Load:
    script = work / "request.lua"
    lines = [f'wrk.headers["Authorization"] = "Bearer {key}"']
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = [[{body}]]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad[1]) if bad else 0) + (sum(int(n) for n in errors.groups()) if errors else 0)
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return Load(per_second, total, failed, _wrk_ms(out, "50"), _wrk_ms(out, "99"), "wrk")


def load_with_threads(url: str, seconds: float, body: str | None, key: str) -> Load:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client() -> None:
        with requests.Session() as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if body is None:
                    status = http.get(url, headers=headers, timeout=30).status_code
                else:
                    status = http.post(url, data=body, headers=headers, timeout=30).status_code
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        for _ in range(CONNECTIONS):
            pool.submit(client)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    bad = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    return Load(len(latencies) / elapsed, len(latencies), bad, cuts[49] * 1000, cuts[98] * 1000, "threads")


def load(url: str, seconds: float, work: Path, body: str | None, key: str) -> Load:
    if shutil.which("wrk"):
        return load_with_wrk(url, seconds, work, body, key)
    return load_with_threads(url, seconds, body, key)


def api_alone(stack: Stack, key: str, seconds: float) -> tuple[Load, Load]:
    stack.start_api()
    # Nothing listens on this port: were a worker to fetch, it would fail at once.
    body = json.dumps({"source": {"url": f"http://127.0.0.1:{free_port()}/clip.mp4"}})
    livez = load(f"{stack.api_url}/livez", seconds, stack.root, None, key)
    submit = load(f"{stack.api_url}/api/v1/jobs", seconds, stack.root, body, key)
    print(
        f"  gunicorn, default workers: /livez {livez.per_second:.0f}/s,"
        f" submissions {submit.per_second:.0f}/s ({submit.bad} not 2xx)",
        flush=True,
    )
    return livez, submit


def submit_uploads(stack: Stack, key: str, clip: Path, count: int, webhook_url: str) -> list[str]:
    options = json.dumps({"webhook_url": webhook_url, "analysis": {"backend": "local"}})
    body = clip.read_bytes()

    def submit(_: int) -> str:
        response = requests.post(
            f"{stack.api_url}/api/v1/uploads",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (clip.name, body, "video/mp4")},
            data={"options": options},
            timeout=60,
        )
        response.raise_for_status()
        return str(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(submit, range(count)))


def bare_jobs(clip: Path, work: Path, count: int) -> float:
    """Seconds for `count` jobs' worth of ffmpeg (probe, transcode, analysis), one after another."""
    started = time.perf_counter()
    for _ in range(count):
        bare_transcode(clip, work)
        bare_analysis(clip, work)
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200, help="tiny jobs through the chain")
    parser.add_argument("--api-seconds", type=float, default=10, help="length of each API load run")
    parser.add_argument("--baseline-jobs", type=int, default=20, help="bare ffmpeg jobs for the baseline")
    parser.add_argument(
        "--redis-db", type=int, default=None, help="Redis database number (default: an empty one)"
    )
    parser.add_argument("--results", default=None, help="append the markdown section here")
    args = parser.parse_args()

    with Stack("throughput", redis_db=args.redis_db) as stack:
        key = stack.create_key()
        print(f"API alone, {args.api_seconds:g} s per run, {CONNECTIONS} connections…", flush=True)
        livez, submit = api_alone(stack, key, args.api_seconds)
        livez2, submit2 = api_alone(stack, key, args.api_seconds)
        # Requests wrk gave up on may still wait in gunicorn's backlog: let them finish first.
        stack.stop_api()
        rows = stack.query("SELECT count(*) FROM jobs")[0][0]
        print(f"  {rows} job rows written; purged {stack.purge_queues()} queued messages", flush=True)
        stack.start_api()

        clip = make_clip(stack.root / "tiny.mp4", seconds=1, size="320x240")
        half = max(1, args.baseline_jobs // 2)
        bare_seconds = bare_jobs(clip, stack.root / "bare-hls", half)
        stack.start_workers()
        receiver = WebhookReceiver()
        try:
            print(f"{args.jobs} tiny jobs through the chain…", flush=True)
            job_ids = submit_uploads(stack, key, clip, args.jobs, receiver.url)
            ended_sql = (
                "SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])"
                " AND status IN ('succeeded', 'failed', 'canceled')"
            )
            wait_until(
                lambda: stack.query(ended_sql, job_ids)[0][0] == len(job_ids),
                timeout=120 + 10 * args.jobs,
                interval=0.5,
                what=f"{args.jobs} jobs to end",
            )
        finally:
            receiver.close()
        bare_seconds += bare_jobs(clip, stack.root / "bare-hls", half)
        rows = stack.query(
            "SELECT status, created_at, finished_at FROM jobs WHERE id = ANY(%s::uuid[])", job_ids
        )

    statuses = Counter(row[0] for row in rows)
    done = [row for row in rows if row[0] == "succeeded"]
    latencies = [(finished - created).total_seconds() for _, created, finished in done]
    span = (max(row[2] for row in done) - min(row[1] for row in done)).total_seconds()
    per_minute = len(done) / span * 60
    bare_per_minute = 2 * half / bare_seconds * 60
    figures: list[Figure] = [
        context("API default workers: GET /livez (baseline)", livez.per_second, "req/s"),
        at_least("API default workers: job submissions", submit.per_second, "req/s", SUBMISSIONS_TARGET),
        context("API default workers: submissions / livez", submit.per_second / livez.per_second, "ratio"),
        context("API default workers: submission p50 latency", submit.p50_ms, "ms"),
        context("API default workers: submission p99 latency", submit.p99_ms, "ms"),
        context("API default workers, run 2: GET /livez (baseline)", livez2.per_second, "req/s"),
        context("API default workers, run 2: job submissions", submit2.per_second, "req/s"),
        context(
            "API default workers, run 2: submissions / livez", submit2.per_second / livez2.per_second, "ratio"
        ),
        context("chain: bare ffmpeg, one lane (baseline)", bare_per_minute, "jobs/min"),
        context("chain: jobs through five stages", per_minute, "jobs/min"),
        context("chain: pipeline / bare ffmpeg lane", per_minute / bare_per_minute, "ratio"),
        context("chain: p50 latency created -> finished", percentile(latencies, 0.50), "s"),
        context("chain: p95 latency created -> finished", percentile(latencies, 0.95), "s"),
    ]
    bad_answers = submit.bad + submit2.bad
    notes = [
        f"API: {submit.client} client, {CONNECTIONS} connections, {args.api_seconds:g} s per run,"
        f" URL source, dispatch to Redis included; {bad_answers} submissions not answered 2xx",
        f"chain: {args.jobs} uploads of a 1 s 320x240 clip submitted at once (8 client threads),"
        " one worker per queue at the Procfile's concurrency, local analysis, webhook to a local receiver",
        f"chain outcomes: {dict(statuses)}; baseline: {2 * half} bare probe + transcode + analysis runs",
    ]
    report(
        "bench/throughput.py: tiny jobs through the chain, and the API alone", notes, figures, args.results
    )


if __name__ == "__main__":
    main()
