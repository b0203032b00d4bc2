"""How ffmpeg and ffprobe children are confined: a memory ceiling and death with their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
from collections.abc import Callable

# prctl(2) option: the signal the kernel sends this process when its parent thread dies.
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child between fork and exec should only make a system call.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def confine(memory_limit_bytes: int | None) -> Callable[[], None]:
    """A ``preexec_fn`` for a media child process.

    RLIMIT_AS makes a file that asks for absurd buffers fail inside ffmpeg instead of taking
    the host's memory. The parent-death signal covers the one exit our own cleanup cannot: the
    worker process being killed outright (a Celery hard time limit, the OOM killer, kill -9),
    after which an ffmpeg in its own session would otherwise run on as an orphan.
    """
    parent = os.getpid()

    def apply() -> None:
        if memory_limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent may have died between fork and prctl; then no signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return apply
