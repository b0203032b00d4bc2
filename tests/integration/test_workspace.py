"""The workspace's one interface, on both stores: the object store (the real S3 server) and a
folder. Whatever a stage, the API or the retention task relies on holds for each."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.config import get_settings
from services.errors import Canceled, StorageFailed
from services.workspace import FileWorkspace, S3Workspace, Workspace, open_workspace
from services.workspace.keys import attempt_prefix, job_prefix
from services.workspace.multipart import PART_BYTES

pytestmark = pytest.mark.integration

BIG = os.urandom(2 * PART_BYTES + 12345)  # three parts, the last a short one


@pytest.fixture(params=["s3", "file"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    if request.param == "file":
        return FileWorkspace(tmp_path / "work")
    request.getfixturevalue("s3_server")
    return open_workspace(get_settings())


@pytest.fixture
def job() -> uuid.UUID:
    return uuid.uuid4()


def in_progress(workspace: Workspace, key: str) -> list[str]:
    return [upload.upload_id for upload in workspace.incomplete_uploads() if upload.key == key]


def write_in_chunks(writer: object, data: bytes, chunk: int = 1024 * 1024) -> None:
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])  # type: ignore[attr-defined]


def test_nothing_is_visible_until_commit(workspace: Workspace, job: uuid.UUID) -> None:
    key = attempt_prefix(job, "fetch", 1) + "original"
    writer = workspace.open_writer(key)
    write_in_chunks(writer, BIG)
    assert not workspace.exists(job_prefix(job))
    assert workspace.objects(job_prefix(job)) == []
    with pytest.raises(StorageFailed):
        workspace.read_bytes(key)
    assert in_progress(workspace, key)  # started, so the retention task can find it if abandoned
    assert writer.commit() == len(BIG)
    assert workspace.read_bytes(key) == BIG
    [stored] = workspace.objects(job_prefix(job))
    assert (stored.key, stored.size) == (key, len(BIG))
    assert in_progress(workspace, key) == []


@pytest.mark.parametrize("size", [0, 1000, len(BIG)])
def test_an_aborted_write_leaves_nothing(workspace: Workspace, job: uuid.UUID, size: int) -> None:
    key = attempt_prefix(job, "fetch", 1) + "original"
    with pytest.raises(RuntimeError), workspace.open_writer(key) as writer:
        write_in_chunks(writer, BIG[:size])
        raise RuntimeError("the stage failed mid-write")
    assert not workspace.exists(job_prefix(job))
    assert in_progress(workspace, key) == []


def test_a_write_to_the_object_store_stops_when_asked(s3_server: str, job: uuid.UUID) -> None:
    """A folder write never waits on anything; an object-store write may wait for the store."""
    workspace = open_workspace(get_settings())
    key = attempt_prefix(job, "fetch", 1) + "original"
    with pytest.raises(Canceled), workspace.open_writer(key, should_stop=lambda: True) as writer:
        write_in_chunks(writer, BIG * 2)
    assert not workspace.exists(job_prefix(job)) and in_progress(workspace, key) == []


def test_the_object_store_workspace_does_not_hash_what_it_sends(s3_server: str, job: uuid.UUID) -> None:
    """Over plain HTTP botocore would SHA-256 every byte into the signature, the API's largest
    CPU cost per uploaded GB after the body's parsing; the store must take the bytes unhashed."""
    workspace = open_workspace(get_settings())
    assert isinstance(workspace, S3Workspace)
    hashes: dict[str, set[str]] = {}

    def record(request: Any, event_name: str, **_: Any) -> None:
        value = request.headers.get("X-Amz-Content-SHA256", b"")
        operation = event_name.rsplit(".", 1)[-1]
        hashes.setdefault(operation, set()).add(value.decode() if isinstance(value, bytes) else value)

    workspace.client.meta.events.register("before-send.s3", record)
    for key, data in (("small", b"x" * 1000), ("big", BIG)):
        with workspace.open_writer(attempt_prefix(job, "fetch", 1) + key) as writer:
            write_in_chunks(writer, data)
        assert workspace.read_bytes(attempt_prefix(job, "fetch", 1) + key) == data
    assert hashes["PutObject"] == hashes["UploadPart"] == {"UNSIGNED-PAYLOAD"}


def test_files_round_trip_and_prefixes_list_and_remove(
    workspace: Workspace, job: uuid.UUID, tmp_path: Path
) -> None:
    big, small = tmp_path / "big.bin", tmp_path / "small.txt"
    big.write_bytes(BIG)
    small.write_text("#EXTM3U\n")
    first, second = attempt_prefix(job, "transcode", 1), attempt_prefix(job, "transcode", 2)
    workspace.put_file(big, first + "240p/seg_00000.ts")
    workspace.put_file(small, first + "master.m3u8")
    workspace.put_file(small, second + "master.m3u8")

    copy = workspace.get_file(first + "240p/seg_00000.ts", tmp_path / "scratch" / "copy.ts")
    assert copy.read_bytes() == BIG
    assert sorted(stored.key for stored in workspace.objects(first)) == [
        first + "240p/seg_00000.ts",
        first + "master.m3u8",
    ]
    assert workspace.exists(second) and not workspace.exists(attempt_prefix(job, "transcode", 3))

    # Removing one attempt leaves the other untouched.
    assert workspace.remove(first) == 2
    assert not workspace.exists(first)
    assert workspace.read_bytes(second + "master.m3u8") == b"#EXTM3U\n"
    assert workspace.remove(job_prefix(job)) == 1
    assert job not in workspace.job_prefixes(None, 10_000)


def test_job_prefixes_page_in_key_order(workspace: Workspace, tmp_path: Path) -> None:
    jobs = sorted((uuid.uuid4() for _ in range(5)), key=str)
    marker = tmp_path / "marker"
    marker.write_bytes(b"x")
    for job in jobs:
        workspace.put_file(marker, attempt_prefix(job, "fetch", 1) + "original")
        workspace.put_file(marker, attempt_prefix(job, "fetch", 2) + "original")
    try:
        listed = [job for job in workspace.job_prefixes(None, 10_000) if job in jobs]
        assert listed == jobs
        # Resuming after a job starts at the next one, not inside the one given.
        after = workspace.job_prefixes(jobs[1], 10_000)
        assert [job for job in after if job in jobs] == jobs[2:]
        assert len(workspace.job_prefixes(None, 2)) == 2
    finally:
        for job in jobs:
            workspace.remove(job_prefix(job))


def test_a_missing_object_is_transient_storage_failed(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(StorageFailed) as caught:
        workspace.get_file(f"jobs/{uuid.uuid4()}/source/clip.mp4", tmp_path / "copy")
    assert caught.value.transient and caught.value.code == "storage_failed"


def test_a_store_that_is_not_there_fails_its_check(tmp_path: Path, s3_server: str) -> None:
    FileWorkspace(tmp_path).check()
    with pytest.raises(StorageFailed, match="does not exist"):
        FileWorkspace(tmp_path / "nowhere").check()
    open_workspace(get_settings()).check()
    missing = get_settings().model_copy(update={"workspace_url": "s3://no-such-workspace/work"})
    with pytest.raises(StorageFailed, match="'no-such-workspace' does not exist"):
        open_workspace(missing).check()
