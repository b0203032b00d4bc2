"""analyze: describe the video with the job's analysis backend (and caption it, with gemini),
from copies in this worker's scratch of what it needs from the workspace."""

from typing import Any

from services.analysis.backends import AnalysisInputs, EarlierOutputs, analyze_job
from services.media.probe import MediaInfo
from services.publishing import transcoded_folder
from tasks.base import StageContext, stage_task
from tasks.runtime import attempt_scratch, delivery


@stage_task("analyze")
def analyze(ctx: StageContext) -> dict[str, Any]:
    with attempt_scratch(ctx) as scratch:
        outputs = EarlierOutputs(
            ctx.workspace,
            source_key=ctx.outputs["fetch"]["key"],
            transcoded=transcoded_folder(ctx.workspace, ctx.outputs["transcode"]),
            scratch=scratch,
            should_stop=ctx.should_stop,
        )
        inputs = AnalysisInputs(
            outputs=outputs,
            info=MediaInfo.from_record(ctx.outputs["fetch"]["media"]),
            renditions=ctx.outputs["transcode"]["renditions"],
            prefix=ctx.outputs["upload"]["prefix"],
            work_dir=scratch / "work",
            audio=ctx.outputs["transcode"].get("audio", []),
        )
        inputs.work_dir.mkdir()
        return analyze_job(
            inputs,
            ctx.options.get("analysis") or {},
            ctx.settings,
            delivery(),
            on_progress=ctx.progress,
            should_stop=ctx.should_stop,
        )
