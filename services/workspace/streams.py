"""Byte streams a stage can stop: reads that may block (a slow URL, an S3 body) run in a
thread of their own, so the stage looks at its stop flag at least every STOP_POLL_SECONDS
however long one read waits."""

from __future__ import annotations

import contextlib
import errno
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from services.errors import Canceled, DiskFull

STOP_POLL_SECONDS = 0.25
# Chunks read ahead of the consumer: enough to keep the reader busy, little memory.
READ_AHEAD = 4
_END = object()
Chunk = TypeVar("Chunk")


def stoppable(
    chunks: Iterable[Chunk], should_stop: Callable[[], bool], *, what: str = "The transfer"
) -> Iterator[Chunk]:
    """The chunks of `chunks`, read in a daemon thread; Canceled as soon as should_stop() is
    true, even while a read is blocked. The reader's own exceptions are raised here."""
    ahead: queue.Queue[Any] = queue.Queue(READ_AHEAD)
    leaving = threading.Event()

    def hand_over(item: Any) -> bool:
        while not leaving.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=STOP_POLL_SECONDS)
                return True
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not hand_over(chunk):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over(exc)
            return
        hand_over(_END)

    reader = threading.Thread(target=read, name="stoppable-read", daemon=True)
    reader.start()
    try:
        while True:
            if should_stop():
                raise Canceled(f"{what} was stopped.")
            try:
                item = ahead.get(timeout=STOP_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # A reader blocked in a read ends with it (its timeout bounds that); it hands nothing more.
        leaving.set()


@contextlib.contextmanager
def full_disk_is_transient(where: str) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT) is the host's state, not the job's fault: another attempt,
    maybe on another host, may well have room. Raised as transient disk_full."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{where} is full ({exc.strerror}).") from exc
        raise
