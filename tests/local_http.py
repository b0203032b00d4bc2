"""Running a test's own HTTP server on loopback for as long as a `with` block lasts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import TypeVar

Server = TypeVar("Server", bound=HTTPServer)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class PacedFile(ThreadingHTTPServer):
    """Serves one file at a fixed rate, as a distant origin would: a download of it takes time
    (time.sleep paces the server's writes; nothing waits on it)."""

    daemon_threads = True

    def __init__(self, body: bytes, bytes_per_second: int) -> None:
        super().__init__(("127.0.0.1", 0), _PacedHandler)
        self.body, self.rate = body, bytes_per_second
        self.requests = 0
        self.sending = threading.Event()

    def url(self, name: str = "source.mp4") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _PacedHandler(BaseHTTPRequestHandler):
    server: PacedFile
    CHUNK = 16 * 1024

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            for start in range(0, len(self.server.body), self.CHUNK):
                self.wfile.write(self.server.body[start : start + self.CHUNK])
                self.wfile.flush()
                self.server.sending.set()
                time.sleep(self.CHUNK / self.server.rate)

    def log_message(self, *_: object) -> None:
        return


@contextmanager
def serving_bytes(body: bytes, name: str = "source.mp4") -> Iterator[str]:
    """`body` served at http://127.0.0.1:<port>/<name> (any path, in fact) while the block lasts."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
