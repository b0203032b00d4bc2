"""Uploads stream into the object-store workspace as a multipart upload, under the key of the
job they create; a refused request (or a client gone mid-body) leaves nothing behind, and a
workspace the API cannot write is a 503 `storage_failed`, not a job that fails later."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Job
from services.config import get_settings
from services.workspace import Workspace, open_workspace
from services.workspace.keys import job_prefix
from services.workspace.multipart import PART_BYTES
from tests.fixtures import ApiClient, wait_until
from tests.ops_fixtures import api_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Larger than two parts: the upload really is a multipart one."""
    path = tmp_path_factory.mktemp("uploads") / "big.mp4"
    path.write_bytes(os.urandom(2 * PART_BYTES + 4321))
    return path


@pytest.fixture
def workspace(s3_server: str) -> Workspace:
    return open_workspace(get_settings())


def open_uploads(workspace: Workspace) -> list[str]:
    return [upload.key for upload in workspace.incomplete_uploads() if "/source/" in upload.key]


def test_an_upload_is_stored_under_its_jobs_key(
    client: ApiClient, sessions: sessionmaker[Session], workspace: Workspace, big_file: Path
) -> None:
    answer = client.upload(big_file)
    assert answer.status_code == 202, answer.text
    job_id = uuid.UUID(answer.json()["id"])
    with sessions() as session:
        source = session.scalars(select(Job.source).where(Job.id == job_id)).one()
    assert source["upload"]["key"] == f"jobs/{job_id}/source/big.mp4"
    assert source["upload"]["bytes"] == big_file.stat().st_size
    # Where the file sits is ours alone: the client sees its name and size.
    assert answer.json()["source"] == {"upload": {"filename": "big.mp4", "bytes": big_file.stat().st_size}}
    assert workspace.read_bytes(source["upload"]["key"]) == big_file.read_bytes()
    assert [stored.key for stored in workspace.objects(f"jobs/{job_id}/source/")] == [source["upload"]["key"]]


@pytest.mark.parametrize(
    ("options", "code"),
    [("{not json", "invalid_options"), (json.dumps({"colour": "blue"}), "invalid_options")],
)
def test_a_refused_upload_leaves_nothing(
    client: ApiClient, workspace: Workspace, big_file: Path, options: str, code: str
) -> None:
    before = set(workspace.job_prefixes(None, 100_000))
    with big_file.open("rb") as body:
        answer = client.post("/api/v1/uploads", files={"file": ("big.mp4", body)}, data={"options": options})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    assert set(workspace.job_prefixes(None, 100_000)) <= before
    assert open_uploads(workspace) == []


def test_an_extra_file_part_is_not_kept(client: ApiClient, workspace: Workspace, big_file: Path) -> None:
    with big_file.open("rb") as first, big_file.open("rb") as second:
        answer = client.post("/api/v1/uploads", files={"file": ("a.mp4", first), "other": ("a.mp4", second)})
    assert answer.status_code == 202, answer.text
    job_id = uuid.UUID(answer.json()["id"])
    assert [stored.key for stored in workspace.objects(job_prefix(job_id))] == [f"jobs/{job_id}/source/a.mp4"]
    assert open_uploads(workspace) == []


def test_a_client_gone_mid_body_leaves_nothing(client: ApiClient, workspace: Workspace, api_key: str) -> None:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    url = urlsplit(client.base)
    with socket.create_connection((url.hostname, url.port)) as conn:
        conn.sendall(
            (
                f"POST /api/v1/uploads HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + 3 * PART_BYTES}\r\n\r\n"
            ).encode()
            + head
        )
        conn.sendall(b"\0" * 2 * PART_BYTES)  # a part goes up, then the client vanishes
        wait_until(lambda: open_uploads(workspace), timeout=10, what="the upload to start")
    wait_until(lambda: not open_uploads(workspace), timeout=10, what="the abandoned upload to be aborted")


def test_a_workspace_that_cannot_be_written_is_503(
    sessions: sessionmaker[Session], api_key: str, big_file: Path
) -> None:
    settings = get_settings().model_copy(update={"workspace_url": "s3://no-such-workspace/work"})
    with api_server(settings) as url:
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["workspace"]["ok"] is False
        assert "does not exist" in ready.json()["checks"]["workspace"]["error"]
        with sessions() as session:
            jobs_before = len(session.scalars(select(Job.id)).all())
        answer = ApiClient(url, api_key).upload(big_file)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "storage_failed"
        assert "does not exist" in answer.json()["error"]["message"]
        with sessions() as session:
            assert len(session.scalars(select(Job.id)).all()) == jobs_before


def test_readiness_names_the_workspace(api_url: str) -> None:
    ready = requests.get(f"{api_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workspace"]["ok"] is True
