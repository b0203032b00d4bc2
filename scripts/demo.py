"""The demo `make run` ends with: make a clip, submit it, follow it, print where to watch it.

It talks to the API over HTTP like any client. It creates its own API key (printed once) so
you can keep using the API afterwards. When done it waits, so the process manager keeps the
services running until Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from models import make_engine, make_session_factory
from services.apikeys import create_key
from services.config import get_settings

API = "http://127.0.0.1:8000"
READY_TIMEOUT_SECONDS = 120
JOB_TIMEOUT_SECONDS = 600


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def wait_for_api() -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{API}/readyz", timeout=3)
            if answer.status_code == 200:
                return
            last = json.dumps(answer.json().get("checks"))
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(1)
    raise SystemExit(f"[demo] the API did not become ready in {READY_TIMEOUT_SECONDS} s: {last}")


def make_demo_clip(folder: Path) -> Path:
    clip = folder / "conveyor-demo.mp4"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=8",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=8",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            str(clip),
        ],
        check=True,
    )  # fmt: skip
    return clip


def follow(job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    shown = ""
    while time.monotonic() < deadline:
        job: dict[str, Any] = requests.get(f"{API}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        line = f"{job['status']:<9} stage={job['stage'] or '-':<9} progress={job['progress']:5.1f}%"
        if line != shown:
            say(line)
            shown = line
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.5)
    raise SystemExit(f"[demo] job {job_id} did not finish in {JOB_TIMEOUT_SECONDS} s")


def main() -> int:
    wait_for_api()
    factory = make_session_factory(make_engine(get_settings().database_url))
    with factory.begin() as session:
        _, key = create_key(session, "demo", admin=True)
    say(f"created an admin API key (shown once): {key}")
    headers = {"Authorization": f"Bearer {key}"}
    with tempfile.TemporaryDirectory() as folder:
        clip = make_demo_clip(Path(folder))
        say(f"uploading {clip.name} ({clip.stat().st_size // 1024} KiB)")
        with clip.open("rb") as body:
            answer = requests.post(
                f"{API}/api/v1/uploads",
                headers=headers,
                files={"file": (clip.name, body, "video/mp4")},
                timeout=60,
            )
    if answer.status_code != 202:
        raise SystemExit(f"[demo] upload refused: {answer.status_code} {answer.text}")
    job = follow(answer.json()["id"], headers)
    if job["status"] != "succeeded":
        say(f"job ended {job['status']}: {job['error']}")
        return 1
    result = job["result"]
    say(f"HLS playback URL: {result['playback_url']}")
    for rendition in result["renditions"]:
        size = f"{rendition['width']}x{rendition['height']}"
        receipt = rendition.get("quality") or {}
        score = f", VMAF {receipt['vmaf_mean']:.1f}" if "vmaf_mean" in receipt else ""
        say(f"  {rendition['name']:>5} {size:>9} {rendition['bandwidth'] // 1000} kb/s{score}")
    for track in result.get("audio", []):
        say(f"  sound: {track['title']} {track['bandwidth'] // 1000} kb/s")
    say("analysis: " + json.dumps(result["analysis"], indent=2))
    say(f"play it: ffplay '{result['playback_url']}'")
    say("Flower: http://127.0.0.1:5555 (login in .env, FLOWER_BASIC_AUTH); Ctrl-C stops everything")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Stay up: honcho stops every process when one exits, and the services should keep running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))
    signal.pause()
