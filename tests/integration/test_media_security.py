"""Hostile uploads: playlists and lists that name other files are refused without being
followed, and headers that promise absurd sizes are refused from the probe, cheaply. ffmpeg
reads only what Conveyor hands it, files in the attempt's scratch: a source or a rendition
that refers to any other file or URL is refused, and nothing it names is ever opened."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.analysis.backends import EarlierOutputs
from services.analysis.gemini import rendition_to_mp4
from services.config import get_settings
from services.errors import AnalysisFailed, InvalidMedia, TooLarge, TranscodeFailed
from services.media.ffmpeg import build_hls_command, run_ffmpeg
from services.media.ladder import plan_ladder
from services.media.probe import MediaInfo, ProbeLimits, VideoStream, probe
from services.publishing import WorkspaceFolder
from services.workspace import Workspace, open_workspace
from tests.fixtures import ApiClient, WorkerProcess
from tests.local_http import running

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


class Listener(ThreadingHTTPServer):
    """An HTTP server that only records: a request reaching it means ffmpeg followed a URL."""

    daemon_threads = True

    def __init__(self) -> None:
        self.paths: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.paths.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    with running(Listener()) as server:
        yield server


def test_the_transcode_parses_its_source_only_as_the_probe_accepted_it(
    tmp_path: Path, tripwire: Tripwire, listener: Listener
) -> None:
    """A source that became a playlist after it was probed (or fooled the probe) is parsed as
    the demuxer the probe accepted (-f mov), under -protocol_whitelist file: it fails, and
    neither the file nor the URL it names is opened."""
    source = tmp_path / "scratch" / "source"
    source.parent.mkdir()
    source.write_text(PLAYLIST.format(uri=tripwire.path).replace("http://127.0.0.1:9", listener.url))
    info = MediaInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration=4.0,
        size_bytes=source.stat().st_size,
        bit_rate=0,
        video=VideoStream(codec="h264", width=320, height=240, fps=25.0, pix_fmt="yuv420p", rotation=0),
        audio=None,
        stream_count=1,
    )
    args = build_hls_command(source, info, plan_ladder(info, ["240p"]), tmp_path / "hls", segment_seconds=2)
    with pytest.raises(TranscodeFailed):
        run_ffmpeg(args, duration=4.0, timeout=30)
    assert not tripwire.opened.is_set()
    assert listener.paths == []


def test_a_playlist_in_the_object_store_is_refused_through_its_url_without_following_it(
    s3_server: str, tmp_path: Path, tripwire: Tripwire, listener: Listener
) -> None:
    """The fetch stage's probe reads an upload where it lies, through a presigned URL, under an
    http-only protocol whitelist and the demuxer whitelist: a playlist is refused as a file
    is, and neither the file nor the URL it names is opened."""
    workspace = open_workspace(get_settings())
    key = f"jobs/{uuid.uuid4()}/source/movie.mp4"
    upload = tmp_path / "movie.mp4"
    upload.write_text(
        PLAYLIST.format(uri=f"file://{tripwire.path}").replace("http://127.0.0.1:9", listener.url)
    )
    workspace.put_file(upload, key)
    try:
        readable = workspace.readable(key, tmp_path / "scratch" / "source")
        assert isinstance(readable.location, str) and readable.location.startswith("http://")
        with pytest.raises(InvalidMedia, match=r"'hls'.*not accepted"):
            probe(readable.location, GENEROUS)
    finally:
        workspace.remove(key)
    assert not tripwire.opened.is_set()
    assert listener.paths == []


def rendition_in_workspace(workspace: Workspace, tmp_path: Path, playlist: str) -> str:
    """A transcode attempt's prefix holding a 240p rendition with one real segment and `playlist`."""
    prefix = f"jobs/{uuid.uuid4()}/transcode/1/"
    folder = tmp_path / "made"
    folder.mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1",
         "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", str(folder / "seg_00000.ts")],
        check=True,
    )  # fmt: skip
    (folder / "index.m3u8").write_text(playlist)
    for path in folder.iterdir():
        workspace.put_file(path, f"{prefix}240p/{path.name}")
    return prefix


OWN_PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nseg_00000.ts\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize("name", ["tripwire", "../secret.ts", "file:///etc/passwd", "url"])
def test_a_rendition_that_names_anything_but_its_own_files_is_refused_unopened(
    s3_server: str, tmp_path: Path, tripwire: Tripwire, listener: Listener, name: str
) -> None:
    workspace = open_workspace(get_settings())
    uri = {"tripwire": str(tripwire.path), "url": f"{listener.url}/x.ts"}.get(name, name)
    prefix = rendition_in_workspace(workspace, tmp_path, OWN_PLAYLIST.replace("seg_00000.ts", uri))
    outputs = EarlierOutputs(
        workspace,
        "unused",
        WorkspaceFolder(workspace, prefix),
        tmp_path / "scratch",
        should_stop=lambda: False,
    )
    with pytest.raises(AnalysisFailed, match="not a file of its own"):
        outputs.media_playlist("240p")
    assert not tripwire.opened.is_set() and listener.paths == []
    assert not (tmp_path / "scratch" / "hls").exists()  # nothing copied, nothing for ffmpeg


def test_a_rendition_of_its_own_files_is_copied_into_scratch(s3_server: str, tmp_path: Path) -> None:
    workspace = open_workspace(get_settings())
    prefix = rendition_in_workspace(workspace, tmp_path, OWN_PLAYLIST)
    outputs = EarlierOutputs(
        workspace,
        "unused",
        WorkspaceFolder(workspace, prefix),
        tmp_path / "scratch",
        should_stop=lambda: False,
    )
    playlist = outputs.media_playlist("240p")
    assert playlist == tmp_path / "scratch" / "hls" / "240p" / "index.m3u8"
    assert sorted(path.name for path in playlist.parent.iterdir()) == ["index.m3u8", "seg_00000.ts"]
    assert probe(playlist.parent / "seg_00000.ts").video is not None


def test_a_playlist_handed_to_ffmpeg_reaches_no_url(tmp_path: Path, listener: Listener) -> None:
    """Below that check, ffmpeg's own protocol whitelist (file only) refuses a URL a playlist
    names, so even a playlist nobody checked cannot make a worker fetch from the network."""
    playlist = tmp_path / "index.m3u8"
    playlist.write_text(OWN_PLAYLIST.replace("seg_00000.ts", f"{listener.url}/x.ts"))
    with pytest.raises(AnalysisFailed):
        rendition_to_mp4(
            [playlist],
            tmp_path / "out.mp4",
            duration=1.0,
            settings=get_settings(),
            on_progress=lambda _: None,
            should_stop=lambda: False,
        )
    assert listener.paths == []
