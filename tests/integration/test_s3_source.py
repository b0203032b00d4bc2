"""S3 objects as sources, against the real S3 server (SeaweedFS), streamed into the
object-store workspace."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from services.config import get_settings
from services.errors import Canceled, ConveyorError, TooLarge
from services.s3source import fetch_s3_object
from services.storage import ensure_bucket, make_s3_client
from services.workspace import Workspace, open_workspace

pytestmark = pytest.mark.integration

BUCKET = "conveyor-sources"
BODY = random.Random(11).randbytes(300_000)
RANGE = 64 * 1024


@pytest.fixture(scope="module")
def s3(s3_server: str) -> Any:
    client = make_s3_client(get_settings())
    ensure_bucket(client, BUCKET)
    client.put_object(Bucket=BUCKET, Key="in/object.bin", Body=BODY)
    return client


@pytest.fixture
def workspace(s3_server: str) -> Workspace:
    return open_workspace(get_settings())


@pytest.fixture
def dest() -> str:
    return f"jobs/{uuid.uuid4()}/fetch/1/original"


def fetch(s3: Any, workspace: Workspace, dest: str, key: str = "in/object.bin", **kwargs: Any) -> int:
    options: dict[str, Any] = {"allowed_buckets": [BUCKET], "max_bytes": len(BODY), "range_bytes": RANGE}
    with workspace.open_writer(dest) as writer:
        return fetch_s3_object(s3, BUCKET, key, writer, **(options | kwargs))


def test_object_is_copied_byte_exact_in_ranges(s3: Any, workspace: Workspace, dest: str) -> None:
    ranges: list[str] = []

    def remember_range(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params["Range"])

    s3.meta.events.register("provide-client-params.s3.GetObject", remember_range)
    progress: list[float] = []
    try:
        assert fetch(s3, workspace, dest, on_progress=progress.append) == len(BODY)
    finally:
        s3.meta.events.unregister("provide-client-params.s3.GetObject", remember_range)
    assert workspace.read_bytes(dest) == BODY
    assert ranges[0] == f"bytes=0-{RANGE - 1}"
    assert ranges[-1] == f"bytes={RANGE * 4}-{len(BODY) - 1}"
    assert len(ranges) == 5
    assert progress[-1] == 100.0


def test_object_over_the_limit_is_too_large_before_any_byte(s3: Any, workspace: Workspace, dest: str) -> None:
    with pytest.raises(TooLarge):
        fetch(s3, workspace, dest, max_bytes=len(BODY) - 1)
    assert not workspace.exists(dest)


def test_missing_object_is_a_permanent_failure(s3: Any, workspace: Workspace, dest: str) -> None:
    with pytest.raises(ConveyorError) as caught:
        fetch(s3, workspace, dest, key="in/missing.bin")
    assert (caught.value.code, caught.value.transient) == ("fetch_failed", False)
    assert "does not exist" in caught.value.message


def test_bucket_not_open_to_sources_is_refused(s3: Any, workspace: Workspace, dest: str) -> None:
    with pytest.raises(ConveyorError) as caught:
        fetch(s3, workspace, dest, allowed_buckets=["somewhere-else"])
    assert (caught.value.code, caught.value.transient) == ("blocked_source", False)
    assert not workspace.exists(dest)


def test_a_copy_stops_when_asked_and_leaves_nothing(s3: Any, workspace: Workspace, dest: str) -> None:
    with pytest.raises(Canceled):
        fetch(s3, workspace, dest, should_stop=lambda: True)
    assert not workspace.exists(dest)
    assert dest not in [upload.key for upload in workspace.incomplete_uploads()]
