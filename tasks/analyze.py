"""analyze: describe the video with the job's analysis backend."""

from typing import Any

from services.analyzers import analyze_source
from tasks.base import StageContext, stage_task


@stage_task("analyze")
def analyze(ctx: StageContext) -> dict[str, Any]:
    source = ctx.workspace.resolve(ctx.outputs["fetch"]["path"])
    analysis = analyze_source(source, ctx.options.get("analysis") or {}, ctx.settings)
    return {"analysis": analysis}
