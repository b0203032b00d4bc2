"""How ffmpeg and ffprobe children are confined: a memory ceiling, death with their parent,
and a process group of their own that is killed whole."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

KILL_GRACE_SECONDS = 1.0

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


def spawn_confined(
    args: Sequence[str], *, memory_limit_bytes: int | None, **popen: Any
) -> subprocess.Popen[str]:
    """Start a media child confined as `confine` says, in a session of its own: killing its
    group reaches anything it forks, and a Ctrl-C meant for the worker is not also delivered
    to it. stdin is closed; text mode with undecodable bytes replaced (file tags are not always
    UTF-8)."""
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=confine(memory_limit_bytes),
        **popen,
    )


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the leader."""
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
