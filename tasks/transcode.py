"""transcode (queue `video`), in parts that any video host may take.

The stage's first attempt plans: the ladder (kept on the stage's row, so every part encodes
the same one) and the parts (services.media.parts). A source of one part is transcoded there and
then, whole, as one ffmpeg process. Otherwise each part is a task of its own
(`pipeline.transcode_part`, its row's id only); the part that finishes last queues the stage
again, and that attempt stitches the parts into one stream (services.media.stitch).
"""

import functools
from pathlib import Path
from typing import Any

from services.media.hls import TranscodePlan, plan_transcode, transcode_job
from services.media.part_transcode import transcode_part as run_part
from services.media.parts import plan_parts
from services.media.probe import MediaInfo
from services.media.stitch import FinishedPart, stitch_parts
from services.workspace.keys import attempt_prefix, part_prefix
from tasks.base import PlannedParts, StageContext, part_task, stage_task
from tasks.runtime import attempt_scratch, kept_source


def _info(ctx: StageContext) -> MediaInfo:
    return MediaInfo.from_record(ctx.outputs["fetch"]["media"])


@stage_task("transcode")
def transcode(ctx: StageContext) -> dict[str, Any] | PlannedParts:
    info, source_key = _info(ctx), ctx.outputs["fetch"]["key"]
    if ctx.parts and all(part.status == "succeeded" for part in ctx.parts):
        assert ctx.resume_state is not None  # the planning attempt kept it with the parts
        with attempt_scratch(ctx) as scratch:
            return stitch_parts(
                ctx.workspace,
                attempt_prefix(ctx.job_id, ctx.stage, ctx.attempt),
                scratch,
                ctx.settings,
                info=info,
                plan=TranscodePlan.from_record(ctx.resume_state),
                parts=[FinishedPart(p.index, p.kind, p.output or {}) for p in ctx.parts],
                should_stop=ctx.should_stop,
            )
    parts = plan_parts(
        info, segment_seconds=ctx.settings.segment_seconds, part_seconds=ctx.settings.part_seconds
    )
    with attempt_scratch(ctx) as scratch:

        @functools.cache
        def source() -> Path:
            if len(parts) > 1:  # the parts that land on this process read the same copy
                return kept_source().get(ctx.workspace, source_key, should_stop=ctx.should_stop)
            # Transcoded whole, here and now: the copy goes with the attempt's scratch.
            return ctx.workspace.get_file(source_key, scratch / "source", should_stop=ctx.should_stop)

        if ctx.parts:  # an operator's retry: the plan stands, the parts not done run again
            assert ctx.resume_state is not None
            return PlannedParts(parts, ctx.resume_state)
        plan = plan_transcode(
            source,
            ctx.settings,
            info=info,
            requested=ctx.options.get("renditions"),
            segment_format=ctx.options.get("segment_format") or "ts",
            video_codecs=ctx.options.get("video_codecs") or ("h264",),
            rate_control=ctx.options.get("rate_control"),
        )
        if len(parts) > 1:
            return PlannedParts(parts, plan.to_record())
        return transcode_job(
            source(),
            ctx.workspace,
            attempt_prefix(ctx.job_id, ctx.stage, ctx.attempt),
            scratch,
            ctx.settings,
            info=info,
            plan=plan,
            on_progress=ctx.progress,
            should_stop=ctx.should_stop,
        )


@part_task("transcode")
def transcode_part(ctx: StageContext) -> dict[str, Any]:
    """One part of a transcode: its window of the source in every rendition, or the sound."""
    assert ctx.part is not None and ctx.resume_state is not None
    with attempt_scratch(ctx) as scratch:
        return run_part(
            kept_source().get(ctx.workspace, ctx.outputs["fetch"]["key"], should_stop=ctx.should_stop),
            ctx.workspace,
            part_prefix(ctx.job_id, ctx.stage, ctx.part.index, ctx.attempt),
            scratch,
            ctx.settings,
            info=_info(ctx),
            plan=TranscodePlan.from_record(ctx.resume_state),
            part=ctx.part,
            timeout=ctx.time_limit or ctx.settings.part_time_limits(ctx.part.span_seconds)[0],
            on_progress=ctx.progress,
            should_stop=ctx.should_stop,
        )
