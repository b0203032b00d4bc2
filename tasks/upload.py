"""upload: publish the renditions to the delivery bucket and record their URLs."""

from typing import Any

from services.config import get_settings
from services.storage import publish_hls
from tasks.base import StageContext, stage_task
from tasks.runtime import delivery


@stage_task("upload")
def upload(ctx: StageContext) -> dict[str, Any]:
    hls_dir = ctx.workspace.resolve(ctx.outputs["transcode"]["hls_dir"])
    prefix = f"{get_settings().s3_prefix}/{ctx.job_id}"
    return publish_hls(
        delivery(), hls_dir, prefix, ctx.outputs["transcode"]["renditions"], on_progress=ctx.progress
    )
