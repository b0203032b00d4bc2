"""fetch_url against real HTTP servers on loopback, reached through the SSRF allow-list, into
the real object-store workspace: nothing becomes visible there unless the whole body arrived."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.config import get_settings
from services.errors import BlockedUrl, Canceled, ConveyorError, FetchFailed, TooLarge
from services.fetching import fetch_url
from services.stopping import StopSignal
from services.workspace import Workspace, open_workspace
from tests.local_http import running

pytestmark = pytest.mark.integration

LOOPBACK = ["127.0.0.0/8"]
BODY = random.Random(7).randbytes(2 * 1024 * 1024 + 12345)  # spans several 1 MiB chunks
LIMIT = 1024 * 1024 + 512 * 1024


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), SourceHandler)
        self.requests: list[tuple[str, str]] = []
        self.redirect_target = ""

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class SourceHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The client may hang up on purpose (size limit); that is not a server failure.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        if self.path == "/file":
            self._send(200, BODY, {"Content-Type": "video/mp4"})
        elif self.path == "/declared-too-large":
            self._send(200, b"x" * (LIMIT + 1))
        elif self.path == "/endless":
            self._stream_without_length()
        elif self.path == "/trickle":
            self._trickle()
        elif self.path == "/server-error":
            self._send(500, b"boom")
        elif self.path == "/redirect":
            self._send(302, headers={"Location": "/file"})
        elif self.path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif self.path == "/away":
            self._send(301, headers={"Location": self.server.redirect_target})
        else:
            self._send(404, b"not here")

    def _trickle(self) -> None:
        # A byte every 0.2 s: never idle long enough for a read timeout, never done either.
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in BODY[:100]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)

    def _stream_without_length(self) -> None:
        # HTTP/1.0 without Content-Length: the body ends when the connection closes.
        self.send_response(200)
        self.end_headers()
        chunk = b"y" * (256 * 1024)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):
                self.wfile.write(chunk)


@contextlib.contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[RecordingServer]:
    with running(RecordingServer(host)) as server:
        yield server


@pytest.fixture
def source() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def workspace(s3_server: str) -> Workspace:
    return open_workspace(get_settings())


def new_key() -> str:
    return f"jobs/{uuid.uuid4()}/fetch/1/original"


def fetch(
    workspace: Workspace, url: str, key: str, allow_cidrs: list[str] | None = None, max_bytes: int = LIMIT * 2
) -> int:
    with workspace.open_writer(key) as writer:
        return fetch_url(
            url,
            writer,
            max_bytes=max_bytes,
            connect_timeout=5,
            read_timeout=5,
            allow_cidrs=LOOPBACK if allow_cidrs is None else allow_cidrs,
        )


def leftovers(workspace: Workspace, key: str) -> list[str]:
    """What a reader could see under `key`, and any upload to it still open."""
    visible = [stored.key for stored in workspace.objects(key)]
    return visible + [upload.key for upload in workspace.incomplete_uploads() if upload.key == key]


def test_file_is_fetched_byte_exact(source: RecordingServer, workspace: Workspace) -> None:
    key = new_key()
    written = fetch(workspace, f"{source.base_url}/file", key)
    assert written == len(BODY)
    assert workspace.read_bytes(key) == BODY
    assert leftovers(workspace, key) == [key]


def test_host_header_carries_the_name_while_connecting_to_the_resolved_ip(
    source: RecordingServer, workspace: Workspace
) -> None:
    port = source.server_address[1]
    fetch(workspace, f"http://localhost:{port}/file", new_key(), allow_cidrs=["127.0.0.0/8", "::1/128"])
    assert source.requests == [("/file", f"localhost:{port}")]


def test_declared_length_over_limit_is_refused_before_reading(
    source: RecordingServer, workspace: Workspace
) -> None:
    key = new_key()
    with pytest.raises(TooLarge) as caught:
        fetch(workspace, f"{source.base_url}/declared-too-large", key, max_bytes=LIMIT)
    assert caught.value.code == "too_large"
    assert leftovers(workspace, key) == []


def test_stream_over_limit_without_length_is_cut_and_removed(
    source: RecordingServer, workspace: Workspace
) -> None:
    key = new_key()
    with pytest.raises(TooLarge) as caught:
        fetch(workspace, f"{source.base_url}/endless", key, max_bytes=LIMIT)
    assert "more than" in caught.value.message
    assert leftovers(workspace, key) == []


def test_not_found_is_a_permanent_failure(source: RecordingServer, workspace: Workspace) -> None:
    key = new_key()
    with pytest.raises(ConveyorError) as caught:
        fetch(workspace, f"{source.base_url}/missing?token=secret", key)
    assert caught.value.code == "fetch_failed"
    assert caught.value.transient is False
    assert "404" in caught.value.message
    assert "secret" not in caught.value.message
    assert leftovers(workspace, key) == []


def test_server_error_is_transient(source: RecordingServer, workspace: Workspace) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch(workspace, f"{source.base_url}/server-error", new_key())
    assert caught.value.transient is True
    assert "500" in caught.value.message


def test_connection_refused_is_transient(workspace: Workspace) -> None:
    with serving() as server:
        closed_url = f"{server.base_url}/file"
    with pytest.raises(FetchFailed) as caught:
        fetch(workspace, closed_url, new_key())
    assert caught.value.transient is True


def test_redirect_to_another_allowed_path_is_followed(source: RecordingServer, workspace: Workspace) -> None:
    key = new_key()
    assert fetch(workspace, f"{source.base_url}/redirect", key) == len(BODY)
    assert workspace.read_bytes(key) == BODY
    assert [path for path, _ in source.requests] == ["/redirect", "/file"]


def test_redirect_into_a_refused_address_is_blocked(workspace: Workspace) -> None:
    # 127.0.0.2 plays a public host (the only allowed address); 127.0.0.1 plays the private one.
    with serving("127.0.0.2") as public, serving("127.0.0.1") as private:
        public.redirect_target = f"{private.base_url}/file"
        key = new_key()
        with pytest.raises(BlockedUrl):
            fetch(workspace, f"{public.base_url}/away", key, allow_cidrs=["127.0.0.2/32"])
        assert [path for path, _ in public.requests] == ["/away"]
        assert private.requests == []
    assert leftovers(workspace, key) == []


@pytest.mark.parametrize(
    "target",
    ["file:///etc/passwd", "gopher://127.0.0.2:70/_", "http://localhost:{port}/file", "http://[::1]:{port}/"],
)
def test_redirect_to_another_scheme_or_a_loopback_name_is_blocked(target: str, workspace: Workspace) -> None:
    key = new_key()
    with serving("127.0.0.2") as public:
        public.redirect_target = target.format(port=public.server_address[1])
        with pytest.raises(BlockedUrl):
            fetch(workspace, f"{public.base_url}/away", key, allow_cidrs=["127.0.0.2/32"])
        assert [path for path, _ in public.requests] == ["/away"]
    assert leftovers(workspace, key) == []


def test_redirect_loop_stops_with_too_many_redirects(source: RecordingServer, workspace: Workspace) -> None:
    key = new_key()
    with pytest.raises(ConveyorError) as caught:
        fetch(workspace, f"{source.base_url}/loop", key)
    assert caught.value.code == "too_many_redirects"
    assert caught.value.transient is False
    assert len(source.requests) == 6  # the first request and five followed redirects
    assert leftovers(workspace, key) == []


def test_a_fetch_waiting_on_a_slow_server_stops_within_half_a_second(
    source: RecordingServer, workspace: Workspace
) -> None:
    """The server trickles one byte at a time (no read ever times out): a cancel must still end
    the download promptly, and leave nothing in the workspace."""
    key = new_key()
    stop = StopSignal()
    threading.Timer(1.0, stop.set, args=("canceled",)).start()
    started = time.monotonic()
    with pytest.raises(Canceled), workspace.open_writer(key) as writer:
        fetch_url(
            f"{source.base_url}/trickle",
            writer,
            max_bytes=LIMIT * 2,
            connect_timeout=5,
            read_timeout=5,
            allow_cidrs=LOOPBACK,
            stop=stop,
        )
    assert time.monotonic() - started < 1.0 + 0.5
    assert leftovers(workspace, key) == []
