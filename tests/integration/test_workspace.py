"""The workspace's one interface, on both stores: the object store (the real S3 server) and a
folder. Whatever a stage, the API or the retention task relies on holds for each."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

from services.config import get_settings
from services.errors import Canceled, StorageFailed
from services.ingest import describe_source, ingest_source
from services.media.probe import ProbeLimits, probe
from services.stopping import StopSignal
from services.workspace import FileWorkspace, S3Workspace, Workspace, open_workspace
from services.workspace.keys import attempt_prefix, job_prefix, upload_key
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


def moov_last_clip(path: Path) -> Path:
    """A short mp4 as cameras write it: the index (moov) after the media, so reading its
    description means seeking to the end."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=2", "-f", "lavfi", "-i", "sine=d=2",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_a_probe_reads_an_object_where_it_lies(workspace: Workspace, job: uuid.UUID, tmp_path: Path) -> None:
    """The object store hands the probe a presigned URL (ffprobe seeks with ranged GETs), the
    folder a hard link in scratch: either way it reads as the file itself does."""
    clip = moov_last_clip(tmp_path / "clip.mp4")
    key = f"jobs/{job}/source/clip.mp4"
    workspace.put_file(clip, key)
    dest = tmp_path / "scratch" / "source"
    try:
        readable = workspace.readable(key, dest)
        limits = ProbeLimits(3600, 8192 * 4320, 16)
        assert readable.size == clip.stat().st_size
        assert probe(readable.location, limits) == probe(clip, limits)
        if isinstance(workspace, S3Workspace):
            assert isinstance(readable.location, str) and not dest.exists()  # nothing copied
        else:
            assert readable.location == dest and dest.samefile(workspace.path(key))
    finally:
        workspace.remove(job_prefix(job))


def test_the_fetch_probes_an_upload_without_copying_it(
    s3_server: str, job: uuid.UUID, tmp_path: Path
) -> None:
    """A 2 GB upload costs the fetch host neither a 2 GB transfer nor 2 GB of scratch: the
    probe reads the object in place, and the attempt's scratch stays empty."""
    settings = get_settings()
    workspace = open_workspace(settings)
    clip = moov_last_clip(tmp_path / "clip.mp4")
    key = upload_key(job, "clip.mp4")
    workspace.put_file(clip, key)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    try:
        ingested = ingest_source(
            {"upload": {"key": key, "filename": "clip.mp4", "bytes": clip.stat().st_size}},
            job,
            1,
            workspace,
            scratch,
            settings,
            resume=cast(Any, None),  # read only by a generated source
            on_progress=lambda _: None,
            stop=StopSignal(),
        )
        info, output = describe_source(ingested, settings)
    finally:
        workspace.remove(job_prefix(job))
    assert list(scratch.iterdir()) == []
    assert (output["key"], output["bytes"]) == (key, clip.stat().st_size)
    assert info.video is not None and info.audio is not None


def test_a_store_gone_mid_probe_is_transient_and_keeps_the_url_to_itself(
    s3_server: str, job: uuid.UUID, tmp_path: Path
) -> None:
    workspace = open_workspace(get_settings())
    key = f"jobs/{job}/source/clip.mp4"
    workspace.put_file(moov_last_clip(tmp_path / "clip.mp4"), key)
    try:
        readable = workspace.readable(key, tmp_path / "source")
    finally:
        workspace.remove(job_prefix(job))
    assert isinstance(readable.location, str)
    gone = readable.location.replace(urlsplit(readable.location).netloc, "127.0.0.1:9")
    with pytest.raises(StorageFailed) as caught:
        probe(gone, ProbeLimits(3600, 8192 * 4320, 16))
    assert caught.value.transient and "Connection refused" in str(caught.value)
    assert "Signature" not in str(caught.value)  # a presigned URL is a credential


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
