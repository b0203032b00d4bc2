"""fetch: put the source in the workspace and make sure it is media."""

from typing import Any

from services.ingest import describe_source, ingest_source
from tasks.base import StageContext, stage_task


@stage_task("fetch")
def fetch(ctx: StageContext) -> dict[str, Any]:
    path = ingest_source(
        ctx.source,
        ctx.job_id,
        ctx.workspace,
        ctx.settings,
        attempt=ctx.attempt,
        # Getting the source is most of the stage; the probe after it is quick.
        on_progress=lambda percent: ctx.progress(0.9 * percent),
        stop=ctx.stop_signal,
    )
    ctx.progress(90)
    _, output = describe_source(path, ctx.workspace, ctx.settings)
    return output
