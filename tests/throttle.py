"""A TCP proxy on loopback that relays to a real server at a fixed rate, for tests that need a
stage to be slow on the network (a slow S3 endpoint, say) without faking the server; `hold`
stops it forwarding anything while keeping every connection open (a partitioned network);
`cut` drops every connection and refuses new ones (a server restarting)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 16 * 1024


class Throttle:
    def __init__(self, upstream: tuple[str, int], bytes_per_second: int) -> None:
        self.upstream = upstream
        self.rate = bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = threading.Event()
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.refusing = threading.Event()
        self.sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(CHUNK):
                self.forwarding.wait()
                sink.sendall(chunk)
                time.sleep(len(chunk) / self.rate)  # the rate limit itself, not synchronisation
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def hold(self) -> None:
        """Forward nothing more (data waits in the proxy), as a network partition would."""
        self.forwarding.clear()

    def release(self) -> None:
        self.forwarding.set()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (each is accepted and closed at once)."""
        self.refusing.set()
        self._close_all()

    def mend(self) -> None:
        self.refusing.clear()

    def _close_all(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()

    def close(self) -> None:
        self.closing.set()
        self.forwarding.set()
        self.listener.close()
        self._close_all()


@contextmanager
def throttled(upstream: tuple[str, int], bytes_per_second: int) -> Iterator[Throttle]:
    proxy = Throttle(upstream, bytes_per_second)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=5)
