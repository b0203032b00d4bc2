"""One video across several video hosts: the transcode in parts, stitched frame-exact.

Two real video workers (concurrency 1 each) take the parts of one job (PART_SECONDS=4, so a
13 s source makes three video parts and the sound part); the stitched stream is read back
through the API's playback links with ffprobe, as a player would."""

from __future__ import annotations

import array
import itertools
import json
import math
import signal
import statistics
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import m3u8
import psutil
import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import JobPart
from services.config import Settings
from services.media.hls import plan_transcode
from services.media.part_transcode import encode_part
from services.media.parts import plan_parts
from services.media.probe import probe, probe_limits
from services.media.quality import merged_receipts
from tests.fixtures import HOST, ApiClient, WorkerProcess, video_alone_on, wait_until
from tests.media import make_clip, make_long_flat_clip, understate_duration
from tests.processes import ffmpeg_for

pytestmark = pytest.mark.integration

# A sine's largest step between samples is peak * 2 pi f / rate, and its loudness is the same
# over every few periods: AAC's own noise stays within these margins, a click or a gap does not
# (measured here: a sine encoded whole 1.00 and 0.96; two pieces encoded apart and joined 0.0).
SINE_HZ, SINE_STEP_MARGIN, MIN_LOUDNESS_SHARE = 440, 1.25, 0.8
EDGE_SAMPLES, WINDOW = 4096, 256
SECONDS, FPS = 13, 30  # a source of three video parts of 4 s (the last 5 s)


def ffprobe(url: str, *args: str) -> Any:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", *args, url],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(done.stdout)


def playlist(url: str) -> m3u8.M3U8:
    return m3u8.loads(requests.get(url, timeout=10).text, uri=url)


def transcode_stage(job: dict[str, Any]) -> dict[str, Any]:
    return next(stage for stage in job["stages"] if stage["name"] == "transcode")


def frames_at(source: Path, fps: float) -> int:
    """How many frames one pass over the whole source gives at `fps` (ffmpeg's fps filter)."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-map", "0:v:0",
         "-vf", f"fps={fps:g}", "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return sum(1 for line in done.stdout.splitlines() if line and not line.startswith("#"))


def assert_stitched_exactly(job: dict[str, Any], source: Path, seconds: float) -> None:
    """Every rendition decodes as many frames as one pass over the whole source, with decode
    timestamps that rise by at most 1.5 frames anywhere (joins included), segments that add up
    to the source and line up across renditions; the sound is one audio rendition that every
    variant refers to, as long as the source."""
    result = job["result"]
    renditions = {rendition["name"]: rendition for rendition in result["renditions"]}
    master = playlist(result["playback_url"])
    assert master.media and all(media.type == "AUDIO" for media in master.media if media.group_id == "audio")
    durations = []
    for variant in master.playlists:
        assert variant.stream_info.audio, "every video rendition refers to the audio group"
        fps = renditions[variant.uri.split("/")[0]]["fps"]
        media = playlist(variant.absolute_uri)
        durations.append([round(segment.duration, 3) for segment in media.segments])
        assert abs(sum(durations[-1]) - seconds) <= 0.25, durations[-1]
        counted = ffprobe(variant.absolute_uri, "-count_frames", "-select_streams", "v:0", "-show_streams")
        assert int(counted["streams"][0]["nb_read_frames"]) == frames_at(source, fps), variant.uri
        packets = ffprobe(variant.absolute_uri, "-select_streams", "v:0", "-show_entries", "packet=dts_time")
        dts = [float(packet["dts_time"]) for packet in packets["packets"]]
        steps = [later - earlier for earlier, later in itertools.pairwise(dts)]
        assert min(steps) > 0 and max(steps) <= 1.5 / fps, (min(steps), max(steps))
    assert all(listed == durations[0] for listed in durations), durations
    [sound] = result["audio"]
    packets = ffprobe(
        sound["url"], "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time"
    )
    first, last = packets["packets"][0], packets["packets"][-1]
    heard = float(last["pts_time"]) + float(last["duration_time"]) - float(first["pts_time"])
    assert abs(heard - seconds) <= 0.1, heard
    samples = decoded_sound(sound["url"])
    jump, sine_step = sine_steps(samples)
    assert jump <= SINE_STEP_MARGIN * sine_step, (jump, sine_step)
    assert loudness_dip(samples) >= MIN_LOUDNESS_SHARE


def decoded_sound(url: str) -> array.array[int]:
    """The sound as 16-bit mono samples, its first and last few thousand aside (the encoder's
    fade in and out)."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", url, "-map", "0:a:0", "-ac", "1", "-f", "s16le", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return array.array("h", pcm)[EDGE_SAMPLES:-EDGE_SAMPLES]


def sine_steps(samples: array.array[int]) -> tuple[int, float]:
    """The largest step between two samples, and the largest a 440 Hz sine of their loudness
    makes (peak * 2 pi f / rate): a click anywhere (a segment boundary, say) steps further."""
    peak = max(abs(sample) for sample in samples)
    jump = max(abs(later - earlier) for earlier, later in itertools.pairwise(samples))
    return jump, peak * 2 * math.pi * SINE_HZ / 48_000


def loudness_dip(samples: array.array[int]) -> float:
    """The quietest stretch of a few periods against the median one: a gap (the priming of an
    AAC piece encoded apart, joined) fades the sine out and back in, with no step to see."""
    peaks = [max(map(abs, samples[at : at + WINDOW])) for at in range(0, len(samples) - WINDOW, WINDOW)]
    return min(peaks) / statistics.median(peaks)


@pytest.mark.parametrize(
    ("source", "options"),
    [
        # veryfast reorders with B-frames (ultrafast has none)
        pytest.param(("-preset", "veryfast"), {}, id="b-frames"),
        pytest.param(("-preset", "veryfast", "-output_ts_offset", "10"), {}, id="starts-at-10s"),
        # 20 of every 30 frames kept, the first and last among them: a variable frame rate
        pytest.param(
            ("-vf", "select='not(between(mod(n,30),10,19))'", "-fps_mode", "vfr"), {}, id="variable-rate"
        ),
        pytest.param(("-preset", "veryfast"), {"segment_format": "fmp4"}, id="fmp4-and-dash"),
    ],
)
def test_a_job_transcoded_in_parts_on_two_hosts_plays_frame_exact(
    video_hosts: list[WorkerProcess],
    client: ApiClient,
    tmp_path: Path,
    source: tuple[str, ...],
    options: dict[str, Any],
) -> None:
    clip = make_clip(
        tmp_path / "clip.mp4", width=640, height=360, seconds=SECONDS, fps=FPS, extra=("-g", "60", *source)
    )
    job = client.wait_for_job(client.upload(clip, options).json()["id"], timeout=240)
    assert job["status"] == "succeeded", job
    stage = transcode_stage(job)
    parts = stage["parts"]
    assert [(p["index"], p["kind"], p["start_seconds"], p["end_seconds"]) for p in parts] == [
        (0, "video", 0.0, 4.0),
        (1, "video", 4.0, 8.0),
        (2, "video", 8.0, None),
        (3, "sound", 0.0, None),
    ]
    assert {p["status"] for p in parts} == {"succeeded"} and {p["attempts"] for p in parts} == {1}
    assert {p["worker"] for p in parts} == {f"{host.name}@{HOST}" for host in video_hosts}
    assert all(p["started_at"] and p["finished_at"] and p["progress"] == 100 for p in parts)
    # The sound (the whole source, the longest part) is queued first, so it runs beside the
    # video parts: it starts before the last of them, which waits for a worker to come free.
    started = {p["index"]: datetime.fromisoformat(p["started_at"]) for p in parts}
    assert started[3] < started[2], started
    assert stage["progress"] == 100
    assert_stitched_exactly(job, clip, SECONDS)
    assert job["result"]["poster_url"] and job["result"]["storyboard"]
    if options.get("segment_format") == "fmp4":
        manifest = requests.get(job["result"]["dash_url"], timeout=10)
        assert manifest.status_code == 200 and "<MPD" in manifest.text


def test_a_container_that_understates_its_length_is_transcoded_to_the_end(
    video_hosts: list[WorkerProcess], client: ApiClient, tmp_path: Path
) -> None:
    """The container says 8 s of a 13 s video: two parts are planned, and the last runs to the
    end of the stream."""
    clip = make_clip(
        tmp_path / "clip.mkv", width=640, height=360, seconds=SECONDS, fps=FPS, extra=("-g", "60")
    )
    lying = understate_duration(clip, tmp_path / "lying.mkv", 8)
    job = client.wait_for_job(client.upload(lying).json()["id"], timeout=240)
    assert job["status"] == "succeeded", job
    parts = transcode_stage(job)["parts"]
    assert [(p["kind"], p["start_seconds"], p["end_seconds"]) for p in parts] == [
        ("video", 0.0, 4.0),
        ("video", 4.0, None),
        ("sound", 0.0, None),
    ]
    assert_stitched_exactly(job, clip, SECONDS)


@pytest.fixture
def slow_video_hosts(workers: WorkerProcess) -> Iterator[list[WorkerProcess]]:
    """Two video workers planning parts of ten minutes: each takes several seconds of a long
    flat clip, long enough to kill or cancel mid-part."""
    with video_alone_on(workers, "slow-parts", {"PART_SECONDS": "600"}) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_long_flat_clip(tmp_path_factory.mktemp("parts"), seconds=3600)


def part_rows(sessions: sessionmaker[Session], job_id: str) -> list[JobPart]:
    with sessions() as session:
        return list(
            session.scalars(
                select(JobPart).where(JobPart.job_id == uuid.UUID(job_id)).order_by(JobPart.index)
            )
        )


def running_ffmpeg(job_id: str) -> list[psutil.Process]:
    return ffmpeg_for(f"{job_id}-transcode-")


def encoding_ffmpeg(job_id: str) -> list[psutil.Process]:
    """The parts' encoders, not their quality receipts: those are measured on a
    best-effort basis, and a receipt that dies leaves its part succeeded."""
    return [p for p in running_ffmpeg(job_id) if "-hls_segment_filename" in p.info["cmdline"]]


def test_a_worker_killed_mid_part_loses_only_that_part(
    slow_video_hosts: list[WorkerProcess], client: ApiClient, sessions: sessionmaker[Session], long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    [ffmpeg, *_] = wait_until(lambda: running_ffmpeg(job_id), timeout=60, what="a part's ffmpeg")
    running = wait_until(
        lambda: [p for p in part_rows(sessions, job_id) if p.status == "running" and p.progress > 0],
        timeout=60,
        what="a part under way",
    )
    # The pool process that runs the part, killed as the kernel's OOM killer would.
    killed_part = next(p for p in running if f"-part{p.index}-" in " ".join(ffmpeg.cmdline()))
    ffmpeg.parent().send_signal(signal.SIGKILL)
    job = client.wait_for_job(job_id, timeout=300)
    assert job["status"] == "succeeded", job
    attempts = {p.index: p.attempts for p in part_rows(sessions, job_id)}
    assert attempts.pop(killed_part.index) == 2
    assert set(attempts.values()) == {1}, attempts


def test_a_cancel_stops_every_running_part_within_two_seconds(
    slow_video_hosts: list[WorkerProcess], client: ApiClient, sessions: sessionmaker[Session], long_clip: Path
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    wait_until(lambda: len(running_ffmpeg(job_id)) == 2, timeout=60, what="two parts running at once")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    wait_until(
        lambda: not running_ffmpeg(job_id), timeout=2.0, interval=0.05, what="every part's ffmpeg to end"
    )
    job = client.wait_for_job(job_id, timeout=30)
    assert job["status"] == "canceled", job
    parts = part_rows(sessions, job_id)
    assert all(p.status in ("succeeded", "canceled") for p in parts), [(p.index, p.status) for p in parts]
    assert sum(p.status == "canceled" for p in parts) >= 2


@pytest.fixture
def fragile_video_hosts(workers: WorkerProcess) -> Iterator[list[WorkerProcess]]:
    """Like slow_video_hosts, with one attempt per part: the first failure fails the job."""
    with video_alone_on(
        workers, "fragile-parts", {"PART_SECONDS": "600", "STAGE_MAX_ATTEMPTS": "1"}
    ) as hosts:
        yield hosts


def test_a_retry_redoes_only_the_parts_that_did_not_succeed(
    fragile_video_hosts: list[WorkerProcess],
    client: ApiClient,
    sessions: sessionmaker[Session],
    long_clip: Path,
) -> None:
    job_id = client.upload(long_clip).json()["id"]
    encoders = wait_until(
        lambda: any(p.status == "succeeded" for p in part_rows(sessions, job_id)) and encoding_ffmpeg(job_id),
        timeout=120,
        what="a part done and another encoding",
    )
    for ffmpeg in encoders:
        ffmpeg.send_signal(signal.SIGKILL)
    failed = client.wait_for_job(job_id, timeout=60)
    assert failed["status"] == "failed" and failed["stage"] == "transcode", failed
    before = {
        p.index: (p.attempts, p.finished_at) for p in part_rows(sessions, job_id) if p.status == "succeeded"
    }
    assert before and len(before) < len(part_rows(sessions, job_id))

    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 202
    job = client.wait_for_job(job_id, timeout=300)
    assert job["status"] == "succeeded", job
    after = {p.index: (p.attempts, p.finished_at) for p in part_rows(sessions, job_id)}
    assert {index: after[index] for index in before} == before  # untouched by the retry
    assert all(p["status"] == "succeeded" for p in transcode_stage(job)["parts"])


def test_a_part_past_its_time_limit_fails_the_job_with_timeout(
    workers: WorkerProcess, client: ApiClient, long_clip: Path
) -> None:
    """A part's limits follow its length (here 0.001 s per second of video, at least 1 s): the
    ten-minute parts of the clip each take several seconds, so the first one times out."""
    env = {"PART_SECONDS": "600", "PART_MIN_TIME_LIMIT": "1", "PART_TIME_LIMIT_FACTOR": "0.001"}
    with video_alone_on(workers, "hurried-parts", env):
        job = client.wait_for_job(client.upload(long_clip).json()["id"], timeout=120)
        assert job["status"] == "failed" and job["error"]["code"] == "timeout", job
        parts = transcode_stage(job)["parts"]
        assert any(p["status"] == "failed" for p in parts), parts
        assert not any(p["status"] in ("queued", "running") for p in parts), parts


def test_every_part_measures_the_receipt_windows_that_fall_in_it(tmp_path: Path) -> None:
    """A 42 s source in two video parts: the receipts' sample spans the whole video (a window
    in each part, each measured by its own part), not the first part alone, and the stitch
    pools both parts' scores into each rendition's receipt."""
    source = make_clip(tmp_path / "clip.mp4", width=426, height=240, seconds=42, audio=False)
    settings = Settings(segment_seconds=4, part_seconds=20)
    info = probe(source, probe_limits(settings))
    plan = plan_transcode(lambda: source, settings, info=info, requested=["240p"])
    parts = [p for p in plan_parts(info, segment_seconds=4, part_seconds=20) if p.kind == "video"]
    assert [(p.start_seconds, p.end_seconds) for p in parts] == [(0.0, 20.0), (20.0, None)]
    measured = []
    for part in parts:
        out = tmp_path / f"part{part.index}"
        out.mkdir()
        output = encode_part(
            source, out / "hls", out / "extras", settings, info=info, plan=plan, part=part,
            timeout=120, on_progress=lambda _: None, should_stop=lambda: False,
        )  # fmt: skip
        [scores] = output["quality"]
        assert scores["metric"] == "vmaf" and scores["sample_seconds"] == 0.5  # one window each
        measured.append(output["quality"])
    [receipt] = merged_receipts(measured, 1)
    assert receipt is not None and receipt["sample_seconds"] == 1.0
    assert receipt["frames"] == sum(len(part[0]["values"]) for part in measured) == 10
    assert 30 < receipt["vmaf_p5"] <= receipt["vmaf_mean"] <= 100
