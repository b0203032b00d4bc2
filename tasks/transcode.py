"""transcode (queue `video`): one ffmpeg process writes every HLS rendition, the poster and
the storyboard, from a copy of the source in this worker's scratch; the outputs go up to the
attempt's own prefix in the workspace while ffmpeg runs."""

from typing import Any

from services.hls import transcode_job
from services.probe import MediaInfo
from services.workspace.keys import attempt_prefix
from tasks.base import StageContext, stage_task
from tasks.runtime import attempt_scratch


@stage_task("transcode")
def transcode(ctx: StageContext) -> dict[str, Any]:
    fetched = ctx.outputs["fetch"]
    with attempt_scratch(ctx) as scratch:
        return transcode_job(
            fetched["key"],
            ctx.workspace,
            attempt_prefix(ctx.job_id, ctx.stage, ctx.attempt),
            scratch,
            ctx.settings,
            info=MediaInfo.from_record(fetched["media"]),
            requested=ctx.options.get("renditions"),
            segment_format=ctx.options.get("segment_format") or "ts",
            video_codecs=ctx.options.get("video_codecs") or ("h264",),
            rate_control=ctx.options.get("rate_control"),
            on_progress=ctx.progress,
            should_stop=ctx.should_stop,
        )
