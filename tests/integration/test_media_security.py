"""Hostile uploads: playlists and lists that name other files are refused without being
followed, and headers that promise absurd sizes are refused from the probe, cheaply."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.errors import InvalidMedia, TooLarge
from services.probe import ProbeLimits, probe
from tests.fixtures import ApiClient, WorkerProcess

pytestmark = pytest.mark.integration

GENEROUS = ProbeLimits(max_duration_seconds=3600, max_pixels=8192 * 4320, max_streams=16)


class Tripwire:
    """A named pipe: opening it for reading, as any demuxer following a reference would,
    releases the writer blocked on the other end, so a read leaves a trace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the pipe
        self.opened.set()
        os.close(fd)

    def disarm(self) -> None:
        if not self.opened.is_set():
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer go
            self.thread.join(timeout=5)
            os.close(fd)


@pytest.fixture
def tripwire(tmp_path: Path) -> Iterator[Tripwire]:
    wire = Tripwire(tmp_path / "secret.ts")
    yield wire
    wire.disarm()


PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{uri}\n#EXTINF:2,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize("name", ["evil.m3u8", "evil.mp4"])  # the extension does not matter
@pytest.mark.parametrize("absolute", [False, True])
def test_hls_playlist_is_refused_and_its_segments_never_opened(
    tmp_path: Path, tripwire: Tripwire, name: str, absolute: bool
) -> None:
    uri = f"file://{tripwire.path}" if absolute else tripwire.path.name
    playlist = tmp_path / name
    playlist.write_text(PLAYLIST.format(uri=uri))
    with pytest.raises(InvalidMedia, match=r"'hls'.*not accepted"):
        probe(playlist, GENEROUS)
    assert not tripwire.opened.is_set()


def test_concat_list_is_refused_and_never_followed(tmp_path: Path, tripwire: Tripwire) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"ffconcat version 1.0\nfile {tripwire.path.name}\nfile /etc/passwd\n")
    with pytest.raises(InvalidMedia, match=r"'concat'.*not accepted"):
        probe(listing, GENEROUS)
    assert not tripwire.opened.is_set()


def y4m_bomb(path: Path, width: int, height: int) -> Path:
    # A valid header promising a huge 4:4:4 picture, then a kilobyte where 768 MB should be.
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C444\nFRAME\n".encode() + bytes(1024))
    return path


def test_frame_bomb_is_refused_from_its_header_under_a_tight_memory_limit(tmp_path: Path) -> None:
    bomb = y4m_bomb(tmp_path / "bomb.y4m", 16000, 16000)
    # Less address space than one of its frames needs: refusing it must not decode one.
    with pytest.raises(TooLarge, match="16000x16000"):
        probe(bomb, GENEROUS, memory_limit_bytes=512 * 1024 * 1024)


def test_probe_limits_on_streams_and_duration(tmp_path: Path) -> None:
    clip = tmp_path / "three-tracks.mkv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:d=2",
         "-f", "lavfi", "-i", "sine=d=2", "-map", "0", "-map", "1", "-map", "1", "-map", "1",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    with pytest.raises(TooLarge, match="4 streams"):
        probe(clip, ProbeLimits(3600, 8192 * 4320, 3))
    with pytest.raises(TooLarge, match="at most 1 s"):
        probe(clip, ProbeLimits(1, 8192 * 4320, 16))
    assert probe(clip, GENEROUS).stream_count == 4


def test_uploaded_playlist_fails_the_job_in_fetch(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    playlist = tmp_path / "movie.m3u8"
    playlist.write_text(PLAYLIST.format(uri="file:///etc/passwd"))
    job = client.wait_for_job(client.upload(playlist).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_media"
    assert "not accepted" in job["error"]["message"]
    assert job["stages"][0]["status"] == "failed"
    assert all(stage["attempts"] == 0 for stage in job["stages"][1:4])


def test_uploaded_frame_bomb_fails_the_job_in_fetch(
    client: ApiClient, workers: WorkerProcess, tmp_path: Path
) -> None:
    job = client.wait_for_job(client.upload(y4m_bomb(tmp_path / "bomb.y4m", 16000, 16000)).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "too_large"
    assert job["stages"][0]["name"] == "fetch" and job["stages"][0]["status"] == "failed"
    assert all(stage["attempts"] == 0 for stage in job["stages"][1:4])
