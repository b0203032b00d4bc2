"""upload: publish the renditions, poster and storyboard to the delivery bucket; record URLs.
The transcode attempt that succeeded named its prefix (and, stitched, its parts' folders);
those alone are published."""

from typing import Any

from services.publishing import publish_hls, transcoded_folder
from tasks.base import StageContext, stage_task
from tasks.runtime import delivery


@stage_task("upload")
def upload(ctx: StageContext) -> dict[str, Any]:
    transcoded = ctx.outputs["transcode"]
    return publish_hls(
        delivery(),
        transcoded_folder(ctx.workspace, transcoded),
        f"{ctx.settings.s3_prefix}/{ctx.job_id}",
        transcoded,
        on_progress=ctx.progress,
        should_stop=ctx.should_stop,
    )
