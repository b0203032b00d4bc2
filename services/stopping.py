"""How a running stage is told to stop: the one signal its heartbeat sets and its body obeys.

A stage stops because its job was canceled, because it lost its stage (another attempt took it
over, or it was released on shutdown), or because it could not renew its lease in time: then it
stops on its own before the lease runs out (self-fencing), so a worker cut off from PostgreSQL
never keeps writing after another worker may have taken over.

A body polls the signal (it is a callable, so it stands wherever a `should_stop` callable is
asked for) at least twice a second in any loop that may wait, and wraps a call that may block
longer (a socket read from a slow server) in `aborting`, which runs an abort (closing the
socket) the moment the signal is set.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("conveyor.stage")

CANCELED = "canceled"
LOST = "lost"
LEASE_EXPIRED = "lease_expired"


class StopSignal:
    def __init__(self, deadline: float | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._aborts: list[Callable[[], None]] = []
        self._deadline = deadline  # time.monotonic() past which the lease may have run out
        self.reason: str | None = None

    def __call__(self) -> bool:
        """Whether the stage must stop now."""
        if not self._event.is_set() and self._deadline is not None and time.monotonic() >= self._deadline:
            self.set(LEASE_EXPIRED)
        return self._event.is_set()

    def extend(self, deadline: float) -> None:
        """The lease was renewed: the stage may run until `deadline` (time.monotonic())."""
        self._deadline = deadline

    def set(self, reason: str) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            aborts = list(self._aborts)
        for abort in aborts:
            try:
                abort()
            except Exception:  # an abort is best effort: the body still sees the signal
                log.warning("aborting a blocked call failed", exc_info=True)

    @contextlib.contextmanager
    def aborting(self, abort: Callable[[], None]) -> Iterator[None]:
        """Run `abort` if the signal is set while the block runs (at once if it already is)."""
        with self._lock:
            self._aborts.append(abort)
            already = self._event.is_set()
        if already:
            abort()
        try:
            yield
        finally:
            with self._lock:
                self._aborts.remove(abort)
