"""upload: publish the renditions, poster and storyboard to the delivery bucket; record URLs."""

from typing import Any

from services.config import get_settings
from services.storage import publish_hls
from tasks.base import StageContext, stage_task
from tasks.runtime import delivery


@stage_task("upload")
def upload(ctx: StageContext) -> dict[str, Any]:
    transcoded = ctx.outputs["transcode"]
    hls_dir = ctx.workspace.resolve(transcoded["hls_dir"])
    prefix = f"{get_settings().s3_prefix}/{ctx.job_id}"
    return publish_hls(
        delivery(), hls_dir, prefix, transcoded, on_progress=ctx.progress, should_stop=ctx.should_stop
    )
