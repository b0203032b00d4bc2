"""What one sweep costs as the backlog grows: 0, 10 000 and 100 000 queued stages whose messages
the broker holds (marked sent, as the sweeper leaves them), plus a few that are due. Each
figure is the median of several sweeps; the ratios are to the sweep with no backlog, in the
same run. The sweeper before this design read every message of every queue on each sweep.

    python -m bench.sweep [--sizes 0,10000,100000] [--rounds 7] [--due 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.harness import Stack
from bench.report import context, report

STAGES = ("fetch", "transcode", "upload", "analyze", "notify")


def add_jobs(session: Session, owner_id: uuid.UUID, count: int, *, sent: bool) -> None:
    """`count` jobs at their first stage, queued; `sent` ones as a backlog the broker holds,
    the others never sent (due to the sweeper)."""
    if count <= 0:
        return
    session.execute(
        text(
            """
            WITH new_jobs AS (
                INSERT INTO jobs (id, owner_id, status, source, options)
                SELECT gen_random_uuid(), :owner, 'queued', '{"url": "https://x/y.mp4"}', '{}'
                FROM generate_series(1, :count)
                RETURNING id
            )
            INSERT INTO job_stages (job_id, name, position, status, attempts, progress,
                                    available_at, message_id, sent_at)
            SELECT new_jobs.id, stage.name, stage.position - 1,
                   CASE WHEN stage.position = 1 THEN 'queued' ELSE 'pending' END, 0, 0,
                   CASE WHEN stage.position = 1 THEN now() - interval '1 hour' END,
                   CASE WHEN stage.position = 1 THEN gen_random_uuid() END,
                   CASE WHEN stage.position = 1 AND :sent THEN now() END
            FROM new_jobs CROSS JOIN unnest(CAST(:stages AS text[])) WITH ORDINALITY AS stage(name, position)
            """
        ),
        {"owner": owner_id, "count": count, "sent": sent, "stages": list(STAGES)},
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,10000,100000", help="backlogs to measure, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="sweeps timed at each size (median kept)")
    parser.add_argument("--due", type=int, default=20, help="never-sent stages added before each timed sweep")
    parser.add_argument("--results", help="markdown file to append to (default: $BENCH_RESULTS)")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))

    with Stack("sweep"):
        from services.apikeys import create_key
        from services.config import get_settings
        from services.contract.recovery import sweep
        from tasks.pipeline import broker_client, dispatch
        from tasks.runtime import session_factory

        sessions, broker, settings = session_factory(), broker_client(), get_settings()
        with sessions.begin() as session:
            owner, _ = create_key(session, "bench-sweep")
        medians: dict[int, float] = {}
        redispatched: dict[int, int] = {}
        backlog = 0
        for size in sizes:
            with sessions.begin() as session:
                add_jobs(session, owner.id, size - backlog, sent=True)
                session.execute(text("ANALYZE job_stages"))
            backlog = size
            sweep(sessions, broker, settings, send=dispatch)  # settle what earlier sizes left
            timings, sent = [], 0
            for _ in range(args.rounds):
                with sessions.begin() as session:
                    add_jobs(session, owner.id, args.due, sent=False)
                started = time.perf_counter()
                done = sweep(sessions, broker, settings, send=dispatch)
                timings.append(time.perf_counter() - started)
                sent += done.redispatched
            medians[size] = statistics.median(timings)
            redispatched[size] = sent
            # What the sweeps sent is now in the broker, logged: the next size starts settled.
            sweep(sessions, broker, settings, send=dispatch)

    empty = medians[sizes[0]]
    figures = [context(f"one sweep, {sizes[0]:,} queued", empty * 1000, "ms")]
    for size in sizes[1:]:
        figures += [
            context(f"one sweep, {size:,} queued", medians[size] * 1000, "ms"),
            context(f"sweep at {size:,} / at {sizes[0]:,}", medians[size] / empty, "x"),
        ]
    figures.append(context("stages sent per sweep (the due ones)", redispatched[sizes[-1]] / args.rounds, ""))
    notes = [
        f"median of {args.rounds} sweeps per size; before each, {args.due} never-sent stages are added "
        "(what a sweep has to do)",
        "the backlog's stages are marked sent: their messages are in the broker, so they are not due",
    ]
    report("Sweep cost against the backlog (bench/sweep.py)", notes, figures, args.results)


if __name__ == "__main__":
    main()
