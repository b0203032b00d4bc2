"""transcode (queue `video`): one ffmpeg process writes every HLS rendition, the poster and
the storyboard; a second measures each rendition's quality."""

from typing import Any

from services.hls import transcode_to_hls
from services.probe import MediaInfo
from tasks.base import StageContext, stage_task


@stage_task("transcode")
def transcode(ctx: StageContext) -> dict[str, Any]:
    source = ctx.workspace.resolve(ctx.outputs["fetch"]["path"])
    out_dir = ctx.workspace.stage_dir(ctx.job_id, "transcode", ctx.attempt)
    output = transcode_to_hls(
        source,
        out_dir,
        ctx.settings,
        info=MediaInfo.from_record(ctx.outputs["fetch"]["media"]),
        requested=ctx.options.get("renditions"),
        segment_format=ctx.options.get("segment_format") or "ts",
        video_codecs=ctx.options.get("video_codecs") or ("h264",),
        rate_control=ctx.options.get("rate_control"),
        on_progress=ctx.progress,
        should_stop=ctx.should_stop,
    )
    return {"hls_dir": ctx.workspace.relative(out_dir)} | output
