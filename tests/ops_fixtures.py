"""Fixtures for the operations tests: admin and second-tenant clients, an extra API server
with its own settings, and captured JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from services.config import Settings
from services.logs import JsonFormatter
from tests.fixtures import ApiClient, make_key
from tests.media import make_clip


@pytest.fixture
def admin_client(api_url: str, admin_key: str) -> ApiClient:
    return ApiClient(api_url, admin_key)


@pytest.fixture
def other_client(api_url: str, other_api_key: str) -> ApiClient:
    return ApiClient(api_url, other_api_key)


@pytest.fixture
def fresh_key(sessions: sessionmaker[Session]) -> str:
    """A key of its own tenant, for tests that count what one key did (jobs, rate limits)."""
    return make_key(sessions, "fresh")


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("ops-media") / "small.mp4", seconds=1)


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    """Another API app on a real socket, built with `settings` (e.g. a tiny rate limit)."""
    from api import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class CapturedLogs:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line]


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """Every log record of this process (the in-process API included), formatted exactly as
    the API's own handler formats it, one JSON object a line."""
    captured = CapturedLogs()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
