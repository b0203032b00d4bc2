"""Finding the ffmpeg processes a test started, whoever their parent is now (orphans too)."""

from __future__ import annotations

import psutil


def ffmpeg_for(marker: str) -> list[psutil.Process]:
    """Every live ffmpeg whose command line names ``marker``, whoever its parent is (orphans too)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        alive = (info["name"] or "").startswith("ffmpeg") and info["status"] != psutil.STATUS_ZOMBIE
        if alive and any(marker in part for part in info["cmdline"] or []):
            found.append(process)
    return found
