"""analyze: describe the video with the job's analysis backend (and caption it, with gemini)."""

from typing import Any

from services.analyzers import AnalysisInputs, analyze_job
from services.probe import MediaInfo
from tasks.base import StageContext, stage_task
from tasks.runtime import delivery


@stage_task("analyze")
def analyze(ctx: StageContext) -> dict[str, Any]:
    inputs = AnalysisInputs(
        source=ctx.workspace.resolve(ctx.outputs["fetch"]["path"]),
        info=MediaInfo.from_record(ctx.outputs["fetch"]["media"]),
        hls_dir=ctx.workspace.resolve(ctx.outputs["transcode"]["hls_dir"]),
        renditions=ctx.outputs["transcode"]["renditions"],
        prefix=ctx.outputs["upload"]["prefix"],
        work_dir=ctx.workspace.stage_dir(ctx.job_id, "analyze", ctx.attempt),
        audio=ctx.outputs["transcode"].get("audio", []),
    )
    return analyze_job(
        inputs,
        ctx.options.get("analysis") or {},
        ctx.settings,
        delivery(),
        on_progress=ctx.progress,
        should_stop=ctx.should_stop,
    )
