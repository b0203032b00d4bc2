"""fetch: put the source in the workspace and make sure it is media."""

from typing import Any

from services.ingest import describe_source, ingest_source
from services.stage_state import StageState
from tasks.base import StageContext, stage_task
from tasks.runtime import attempt_scratch, session_factory


@stage_task("fetch")
def fetch(ctx: StageContext) -> dict[str, Any]:
    with attempt_scratch(ctx) as scratch:
        ingested = ingest_source(
            ctx.source,
            ctx.job_id,
            ctx.attempt,
            ctx.workspace,
            scratch,
            ctx.settings,
            resume=StageState(session_factory(), ctx.job_id, ctx.stage, ctx.attempt),
            # Getting the source is most of the stage; the probe after it is quick.
            on_progress=lambda percent: ctx.progress(0.9 * percent),
            stop=ctx.stop_signal,
        )
        ctx.progress(90)
        _, output = describe_source(ingested, ctx.settings)
    return output
