"""S3 objects as sources, against the real S3 server (SeaweedFS)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from services.config import get_settings
from services.errors import ConveyorError, TooLarge
from services.s3source import fetch_s3_object
from services.storage import ensure_bucket, make_s3_client

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


def fetch(s3: Any, dest: Path, key: str = "in/object.bin", **kwargs: Any) -> int:
    options: dict[str, Any] = {"allowed_buckets": [BUCKET], "max_bytes": len(BODY), "range_bytes": RANGE}
    return fetch_s3_object(s3, BUCKET, key, dest, **(options | kwargs))


def test_object_is_copied_byte_exact_in_ranges(s3: Any, tmp_path: Path) -> None:
    ranges: list[str] = []

    def remember_range(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params["Range"])

    s3.meta.events.register("provide-client-params.s3.GetObject", remember_range)
    progress: list[float] = []
    try:
        assert fetch(s3, tmp_path / "original", on_progress=progress.append) == len(BODY)
    finally:
        s3.meta.events.unregister("provide-client-params.s3.GetObject", remember_range)
    assert (tmp_path / "original").read_bytes() == BODY
    assert sorted(tmp_path.iterdir()) == [tmp_path / "original"]
    assert ranges[0] == f"bytes=0-{RANGE - 1}"
    assert ranges[-1] == f"bytes={RANGE * 4}-{len(BODY) - 1}"
    assert len(ranges) == 5
    assert progress[-1] == 100.0


def test_object_over_the_limit_is_too_large_before_any_byte(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(TooLarge):
        fetch(s3, tmp_path / "original", max_bytes=len(BODY) - 1)
    assert list(tmp_path.iterdir()) == []


def test_missing_object_is_a_permanent_failure(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        fetch(s3, tmp_path / "original", key="in/missing.bin")
    assert (caught.value.code, caught.value.transient) == ("fetch_failed", False)
    assert "does not exist" in caught.value.message


def test_bucket_not_open_to_sources_is_refused(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(ConveyorError) as caught:
        fetch(s3, tmp_path / "original", allowed_buckets=["somewhere-else"])
    assert (caught.value.code, caught.value.transient) == ("blocked_source", False)
    assert list(tmp_path.iterdir()) == []
