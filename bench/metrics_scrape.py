"""/metrics scrape time with 0 and with 100 000 jobs in the database.

Run from the repository root: ``.venv/bin/python -m bench.metrics_scrape [--jobs 100000]``.

The API under gunicorn as `make run` starts it; each figure is the median of ``--scrapes``
scrapes of ``GET /metrics``. Jobs are written straight into PostgreSQL (one statement per
batch: the job, its five stages, succeeded with durations spread from 0.1 s to 2 h, and
its events), so the counters are kept by the same triggers as in production. Target: the
scrape at 100 000 jobs within 1.5x of the scrape at 0 (a cost that does not follow the jobs).
For context, the queries the collector ran before counters existed (jobs grouped by status,
the stage-duration histogram over every succeeded stage) are timed on the same data.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
import requests

from bench.harness import Stack
from bench.report import Figure, at_most, context, report

RATIO_TARGET = 1.5
BATCH = 10_000
INSERT = """
WITH owner AS (SELECT id FROM api_keys LIMIT 1),
new_jobs AS (
    INSERT INTO jobs (owner_id, status, source, options, finished_at)
    SELECT owner.id, (ARRAY['succeeded', 'succeeded', 'succeeded', 'failed', 'canceled'])[1 + n %% 5],
           '{"url": "http://127.0.0.1:9/x.mp4"}', '{}', now()
    FROM owner, generate_series(1, %s) AS n
    RETURNING id
),
new_stages AS (
    INSERT INTO job_stages (job_id, name, position, status, attempts, progress, started_at, finished_at)
    SELECT new_jobs.id, stage.name, stage.position, 'succeeded', 1, 100,
           now() - make_interval(secs => 0.1 + random() * 7200), now()
    FROM new_jobs, unnest(ARRAY['fetch', 'transcode', 'upload', 'analyze', 'notify'])
         WITH ORDINALITY AS stage(name, position)
)
INSERT INTO job_events (job_id, type, data) SELECT id, 'job.queued', '{}' FROM new_jobs
"""
# What services/metrics.py read at every scrape before the counters (kept here as the baseline).
OLD_QUERIES = (
    "SELECT status, count(*) FROM jobs GROUP BY status",
    "SELECT name, count(*) FILTER (WHERE extract(epoch FROM finished_at - started_at) <= 60), count(*),"
    " sum(extract(epoch FROM finished_at - started_at)) FROM job_stages"
    " WHERE status = 'succeeded' AND started_at IS NOT NULL GROUP BY name",
    "SELECT ok, count(*) FROM webhook_deliveries GROUP BY ok",
)


def scrape_ms(url: str, scrapes: int) -> float:
    times = []
    with requests.Session() as http:
        http.get(f"{url}/metrics", timeout=30).raise_for_status()  # warm: connections, caches
        for _ in range(scrapes):
            started = time.perf_counter()
            http.get(f"{url}/metrics", timeout=30).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def old_queries_ms(stack: Stack, scrapes: int) -> float:
    times = []
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={stack.database}") as conn:
        for _ in range(scrapes):
            started = time.perf_counter()
            for sql in OLD_QUERIES:
                conn.execute(sql).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--redis-db", type=int, default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()

    with Stack("metrics", redis_db=args.redis_db) as stack:
        stack.create_key()
        url = stack.start_api()
        empty = scrape_ms(url, args.scrapes)
        old_empty = old_queries_ms(stack, 5)
        print(f"0 jobs: scrape {empty:.1f} ms; writing {args.jobs} jobs…", flush=True)
        with psycopg.connect(
            f"host=127.0.0.1 user=postgres dbname={stack.database}", autocommit=True
        ) as conn:
            for start in range(0, args.jobs, BATCH):
                conn.execute(INSERT, (min(BATCH, args.jobs - start),))
            conn.execute("VACUUM ANALYZE")
        full = scrape_ms(url, args.scrapes)
        old_full = old_queries_ms(stack, 5)
        counted = stack.query("SELECT sum(value) FROM metric_counts WHERE metric = 'jobs'")[0][0]
    print(f"{args.jobs} jobs: scrape {full:.1f} ms", flush=True)
    figures: list[Figure] = [
        context("scrape, 0 jobs (baseline)", empty, "ms"),
        context(f"scrape, {args.jobs} jobs", full, "ms"),
        at_most(f"scrape {args.jobs} jobs / 0 jobs", full / empty, "ratio", RATIO_TARGET),
        context("the former scrape's queries, 0 jobs", old_empty, "ms"),
        context(f"the former scrape's queries, {args.jobs} jobs", old_full, "ms"),
    ]
    notes = [
        f"median of {args.scrapes} scrapes of GET /metrics, gunicorn at its defaults;"
        f" {args.jobs} jobs and {5 * args.jobs} succeeded stages written by SQL"
        f" (the counters say {counted:.0f} jobs)",
    ]
    report("bench/metrics_scrape.py: /metrics at 0 and many jobs", notes, figures, args.results)


if __name__ == "__main__":
    main()
