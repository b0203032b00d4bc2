"""fetch_url against real HTTP servers on loopback, reached through the SSRF allow-list."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.errors import BlockedUrl, ConveyorError, FetchFailed, TooLarge
from services.fetching import fetch_url
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


def fetch(url: str, dest: Path, allow_cidrs: list[str] | None = None, max_bytes: int = LIMIT * 2) -> int:
    return fetch_url(
        url,
        dest,
        max_bytes=max_bytes,
        connect_timeout=5,
        read_timeout=5,
        allow_cidrs=LOOPBACK if allow_cidrs is None else allow_cidrs,
    )


def leftovers(dest: Path) -> list[Path]:
    return sorted(dest.parent.iterdir()) if dest.parent.exists() else []


def test_file_is_fetched_byte_exact(source: RecordingServer, tmp_path: Path) -> None:
    dest = tmp_path / "jobs" / "j1" / "source.mp4"
    written = fetch(f"{source.base_url}/file", dest)
    assert written == len(BODY)
    assert dest.read_bytes() == BODY
    assert leftovers(dest) == [dest]


def test_host_header_carries_the_name_while_connecting_to_the_resolved_ip(
    source: RecordingServer, tmp_path: Path
) -> None:
    port = source.server_address[1]
    fetch(f"http://localhost:{port}/file", tmp_path / "a.mp4", allow_cidrs=["127.0.0.0/8", "::1/128"])
    assert source.requests == [("/file", f"localhost:{port}")]


def test_declared_length_over_limit_is_refused_before_reading(
    source: RecordingServer, tmp_path: Path
) -> None:
    dest = tmp_path / "big.mp4"
    with pytest.raises(TooLarge) as caught:
        fetch(f"{source.base_url}/declared-too-large", dest, max_bytes=LIMIT)
    assert caught.value.code == "too_large"
    assert leftovers(dest) == []


def test_stream_over_limit_without_length_is_cut_and_removed(source: RecordingServer, tmp_path: Path) -> None:
    dest = tmp_path / "endless.mp4"
    with pytest.raises(TooLarge) as caught:
        fetch(f"{source.base_url}/endless", dest, max_bytes=LIMIT)
    assert "more than" in caught.value.message
    assert leftovers(dest) == []


def test_not_found_is_a_permanent_failure(source: RecordingServer, tmp_path: Path) -> None:
    dest = tmp_path / "missing.mp4"
    with pytest.raises(ConveyorError) as caught:
        fetch(f"{source.base_url}/missing?token=secret", dest)
    assert caught.value.code == "fetch_failed"
    assert caught.value.transient is False
    assert "404" in caught.value.message
    assert "secret" not in caught.value.message
    assert leftovers(dest) == []


def test_server_error_is_transient(source: RecordingServer, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch(f"{source.base_url}/server-error", tmp_path / "e.mp4")
    assert caught.value.transient is True
    assert "500" in caught.value.message


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with serving() as server:
        closed_url = f"{server.base_url}/file"
    with pytest.raises(FetchFailed) as caught:
        fetch(closed_url, tmp_path / "c.mp4")
    assert caught.value.transient is True


def test_redirect_to_another_allowed_path_is_followed(source: RecordingServer, tmp_path: Path) -> None:
    dest = tmp_path / "r.mp4"
    assert fetch(f"{source.base_url}/redirect", dest) == len(BODY)
    assert dest.read_bytes() == BODY
    assert [path for path, _ in source.requests] == ["/redirect", "/file"]


def test_redirect_into_a_refused_address_is_blocked(tmp_path: Path) -> None:
    # 127.0.0.2 plays a public host (the only allowed address); 127.0.0.1 plays the private one.
    with serving("127.0.0.2") as public, serving("127.0.0.1") as private:
        public.redirect_target = f"{private.base_url}/file"
        dest = tmp_path / "ssrf.mp4"
        with pytest.raises(BlockedUrl):
            fetch(f"{public.base_url}/away", dest, allow_cidrs=["127.0.0.2/32"])
        assert [path for path, _ in public.requests] == ["/away"]
        assert private.requests == []
    assert leftovers(dest) == []


@pytest.mark.parametrize(
    "target",
    ["file:///etc/passwd", "gopher://127.0.0.2:70/_", "http://localhost:{port}/file", "http://[::1]:{port}/"],
)
def test_redirect_to_another_scheme_or_a_loopback_name_is_blocked(target: str, tmp_path: Path) -> None:
    with serving("127.0.0.2") as public:
        public.redirect_target = target.format(port=public.server_address[1])
        with pytest.raises(BlockedUrl):
            fetch(f"{public.base_url}/away", tmp_path / "x.mp4", allow_cidrs=["127.0.0.2/32"])
        assert [path for path, _ in public.requests] == ["/away"]
    assert leftovers(tmp_path / "x.mp4") == []


def test_redirect_loop_stops_with_too_many_redirects(source: RecordingServer, tmp_path: Path) -> None:
    dest = tmp_path / "loop.mp4"
    with pytest.raises(ConveyorError) as caught:
        fetch(f"{source.base_url}/loop", dest)
    assert caught.value.code == "too_many_redirects"
    assert caught.value.transient is False
    assert len(source.requests) == 6  # the first request and five followed redirects
    assert leftovers(dest) == []
