"""Progress streams one API process holds open before GET /livez takes more than 1 s.

Run from the repository root: ``.venv/bin/python -m bench.streams [--max-streams 900]``.

One gunicorn worker (WEB_CONCURRENCY=1) as gunicorn.conf.py configures it (gevent). Streams
(`GET /api/v1/jobs/<id>/events`) are opened in steps on jobs that stay running (their fetch is
leased to a worker that does not exist, so they are idle, as a browser tab on a long transcode
is) and kept open; at each step the median of five GET /livez and one job submission are
timed on fresh connections (tests/integration/test_api_starvation.py checks that events
reach open streams). Baseline, same invocation: the same worker with gthread and 8 threads (the previous
configuration), whose steps are smaller. The figure is the last step at which /livez still
answered within 1 s (or the largest step tried, when it never stopped).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import time
import uuid

import requests

from bench.harness import Stack
from bench.report import Figure, at_least, context, report
from models import make_engine, make_session_factory
from tests.streams import open_stream, parked_jobs

BOUND_SECONDS = 1.0
JOBS = 20
GEVENT_STEPS = (50, 100, 200, 400, 600, 900)
GTHREAD_STEPS = (4, 8, 12, 16, 24)


def answered_within(call: object, limit: float) -> float:
    started = time.perf_counter()
    try:
        ok = call().status_code < 300  # type: ignore[operator]
    except requests.RequestException:
        ok = False
    elapsed = time.perf_counter() - started
    return elapsed if ok else max(elapsed, limit * 10)


def probe(url: str, key: str) -> tuple[float, float]:
    """(median /livez seconds of five, one submission's seconds); a failure counts as 10 s."""
    livez = statistics.median(
        answered_within(lambda: requests.get(f"{url}/livez", timeout=10), BOUND_SECONDS) for _ in range(5)
    )
    body = {"source": {"url": "http://127.0.0.1:9/y.mp4"}}
    headers = {"Authorization": f"Bearer {key}"}
    submit = answered_within(
        lambda: requests.post(f"{url}/api/v1/jobs", json=body, headers=headers, timeout=10), BOUND_SECONDS
    )
    return livez, submit


def climb(
    stack: Stack, key: str, jobs: list[uuid.UUID], steps: tuple[int, ...]
) -> list[tuple[int, float, float]]:
    url = stack.start_api()
    streams: list[socket.socket] = []
    rows = []
    try:
        for step in steps:
            while len(streams) < step:
                streams.append(open_stream(url, key, jobs[len(streams) % len(jobs)]))
            time.sleep(1.0)  # let the server take what it will of the new connections
            livez, submit = probe(url, key)
            rows.append((step, livez, submit))
            print(
                f"  {step:4d} streams: /livez {livez * 1000:7.1f} ms, submission {submit * 1000:7.1f} ms",
                flush=True,
            )
            if livez > BOUND_SECONDS:
                break
    finally:
        for conn in streams:
            conn.close()
        stack.stop_api()
    return rows


def last_within(rows: list[tuple[int, float, float]]) -> int:
    good = [step for step, livez, _ in rows if livez <= BOUND_SECONDS]
    return good[-1] if good else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-streams", type=int, default=GEVENT_STEPS[-1])
    parser.add_argument("--redis-db", type=int, default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.max_streams)), hard))
    steps = tuple(step for step in GEVENT_STEPS if step <= args.max_streams) or (args.max_streams,)

    with Stack("streams", redis_db=args.redis_db, overrides={"WEB_CONCURRENCY": "1"}) as stack:
        key = stack.create_key()
        owner = stack.query("SELECT id FROM api_keys LIMIT 1")[0][0]
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{stack.database}")
        jobs = parked_jobs(make_session_factory(engine), owner, JOBS)
        engine.dispose()
        print("gthread, 8 threads (the previous configuration):", flush=True)
        os.environ["GUNICORN_CMD_ARGS"] = "--worker-class gthread --threads 8"
        before = climb(stack, key, jobs, GTHREAD_STEPS)
        del os.environ["GUNICORN_CMD_ARGS"]
        print("gevent (gunicorn.conf.py):", flush=True)
        after = climb(stack, key, jobs, steps)

    held_before, held_after = last_within(before), last_within(after)
    never = after[-1][1] <= BOUND_SECONDS
    step, livez, submit = after[-1]
    figures: list[Figure] = [
        context("gthread x 8: streams before /livez > 1 s (baseline)", held_before, "streams"),
        at_least("gevent: streams with /livez within 1 s", held_after, "streams", 200),
        context(f"gevent: /livez median at {step} streams", livez * 1000, "ms"),
        context(f"gevent: a submission at {step} streams", submit * 1000, "ms"),
        context("gevent / gthread streams held", held_after / max(1, held_before), "ratio"),
    ]
    verdict = (
        f"never exceeded 1 s up to {step} streams" if never else f"exceeded 1 s past {held_after} streams"
    )
    notes = [
        f"one gunicorn worker; idle streams on {JOBS} running jobs; /livez {verdict}",
        "gthread steps: " + ", ".join(f"{s}: {lv * 1000:.0f} ms" for s, lv, _ in before),
    ]
    report("bench/streams.py: progress streams per API process", notes, figures, args.results)


if __name__ == "__main__":
    main()
