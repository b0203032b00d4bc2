"""upload: publish the renditions, poster and storyboard to the delivery bucket; record URLs.
The transcode attempt that succeeded named its prefix; that prefix alone is published."""

from typing import Any

from services.publishing import WorkspaceFolder, publish_hls
from tasks.base import StageContext, stage_task
from tasks.runtime import delivery


@stage_task("upload")
def upload(ctx: StageContext) -> dict[str, Any]:
    transcoded = ctx.outputs["transcode"]
    return publish_hls(
        delivery(),
        WorkspaceFolder(ctx.workspace, transcoded["prefix"]),
        f"{ctx.settings.s3_prefix}/{ctx.job_id}",
        transcoded,
        on_progress=ctx.progress,
        should_stop=ctx.should_stop,
    )
