"""An isolated Conveyor for the benchmarks, started and torn down by one `with Stack(...)`.

Everything is the bench's own: a fresh PostgreSQL database (migrated with Alembic), an empty
Redis database number, SeaweedFS on free ports, gunicorn for the API and one Celery worker per
queue as separate processes, in a temporary folder that is removed at the end. The machine's
PostgreSQL and Redis servers are the ones `make run` uses; nothing of `make run`'s or of a test
session's data is touched.

The environment is set by `Stack.__init__`, before anything of ours reads settings (the
cached settings object is dropped then); `tasks`, whose `celeryconfig` reads settings on
import, is imported only inside methods. Also here: the bare ffmpeg baselines, built exactly
as the stages build their commands, a webhook receiver and a peak-memory sampler.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import psycopg
import redis
import requests
from celery import Celery

from bench.traffic import Traffic, bucket_traffic
from scripts.s3server import free_s3_port, start_weed, stop_weed
from services.analysis.backends import smallest_picture
from services.analysis.local import analyze_local
from services.broker import EPOCH_KEY, SENT_LOG_KEY
from services.config import get_settings
from services.media.ffmpeg import build_hls_command, run_ffmpeg
from services.media.hls import encoders_for, picture_plan_for, quality_scores, storyboard_plan_for
from services.media.ladder import DEFAULT_RATE_CONTROL, plan_audio, plan_ladder
from services.media.probe import probe
from services.storage import ensure_bucket, make_s3_client

REPO = Path(__file__).resolve().parent.parent
ADMIN_DSN = "host=127.0.0.1 user=postgres dbname=postgres"
# The concurrency of each queue's worker in the Procfile, so the bench runs what `make run` runs;
# the maintenance worker also runs beat (the sweeper sends what a failed send left behind).
QUEUE_CONCURRENCY = {"fetch": 2, "video": 1, "upload": 2, "analyze": 1, "notify": 2, "maintenance": 1}
# Counted in Redis like any limit, but never reached: the benches measure capacity, not policy.
UNREACHABLE_RATE_LIMIT = "100000000/minute"
WORKSPACE_BUCKET = "conveyor-bench-work"
# How a test session (tests/conftest.py) or a bench marks a Redis database as its own.
OWNER_KEY = "conveyor:test-session-pid"
# Keys a finished run leaves in its Redis database besides kombu's bindings (the send log).
LEFT_BY_A_FINISHED_RUN = frozenset({SENT_LOG_KEY.encode(), EPOCH_KEY.encode()})


def wait_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


def claim_redis_db(exclude: frozenset[int] | set[int] = frozenset()) -> int:
    """A Redis database number nobody is using, claimed as the test sessions claim theirs (our
    pid under OWNER_KEY, so a session starting meanwhile takes another): not 0 (`make run`'s),
    not one in `exclude`, none whose recorded owner lives, and none holding more than what a
    finished run leaves behind (kombu's exchange bindings, the send log's bookkeeping). A
    database two systems shared would have each one's workers take, and drop, the other's
    messages."""
    for number in range(15, 0, -1):
        if number in exclude:
            continue
        client = redis.Redis(db=number)
        owner = client.get(OWNER_KEY)
        if owner is not None and _alive(int(owner)):
            continue
        keys = [key for key in client.scan_iter(count=1000) if key != OWNER_KEY.encode()]
        if not all(key.startswith(b"_kombu.binding") or key in LEFT_BY_A_FINISHED_RUN for key in keys):
            continue
        if client.set(OWNER_KEY, os.getpid(), nx=owner is None):
            return number
    raise RuntimeError("no idle Redis database among 1-15; pass --redis-db")


def release_redis_db(number: int) -> None:
    client = redis.Redis(db=number)
    if client.get(OWNER_KEY) == str(os.getpid()).encode():
        client.delete(OWNER_KEY)


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def python_children(self) -> list[int]:
        """Pids of the pool processes (gunicorn workers, Celery prefork children)."""
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.proc.pid).children()
            return [child.pid for child in children if not child.name().startswith(("ffmpeg", "ffprobe"))]
        return []

    def stop(self, grace: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Stack:
    """The whole service for one bench; the environment it sets is what every process reads."""

    tag: str
    redis_db: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    database: str = field(init=False)
    s3_port: int = field(init=False)
    metrics_port: int = field(init=False)
    api: ServiceProcess | None = field(init=False, default=None)
    api_url: str = field(init=False, default="")
    apis: list[ServiceProcess] = field(init=False, default_factory=list)
    workers: dict[str, ServiceProcess] = field(init=False, default_factory=dict)
    redis_urls: set[str] = field(init=False, default_factory=set)
    claimed_dbs: set[int] = field(init=False, default_factory=set)
    _weed: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-{self.tag}-"))
        self.database = f"conveyor_bench_{os.getpid()}"
        self.redis_db = self.redis_db if self.redis_db is not None else claim_redis_db()
        self.claimed_dbs = {self.redis_db}
        self.s3_port = free_s3_port(start_offset=5000)
        self.metrics_port = free_port()
        secret = secrets.token_urlsafe(48)
        os.environ.update(
            {
                "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}",
                "REDIS_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
                # As make run: the workspace is a bucket of its own (file_workspace_url for one host).
                "WORKSPACE_URL": f"s3://{WORKSPACE_BUCKET}/work",
                "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
                "S3_BUCKET": "conveyor-bench",
                "S3_PREFIX": "hls",
                "AWS_ACCESS_KEY_ID": "conveyor-bench",
                "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
                "CONVEYOR_SECRET_KEY": secret,
                # The benches' own HTTP servers (sources, webhook receiver) listen on loopback.
                "SSRF_ALLOW_CIDRS": json.dumps(["127.0.0.0/8"]),
                "SUBMIT_RATE_LIMIT": UNREACHABLE_RATE_LIMIT,
                # Empty beats a key in .env: analysis stays local, nothing leaves the machine.
                "GOOGLE_API_KEY": "",
                "LOG_LEVEL": "INFO",
            }
            | self.overrides
        )
        get_settings.cache_clear()
        self.redis_urls.add(os.environ["REDIS_URL"])

    def another_redis_url(self) -> str:
        """A Redis database of its own for a second deployment beside this stack's."""
        number = claim_redis_db(exclude=self.claimed_dbs)
        self.claimed_dbs.add(number)
        return f"redis://127.0.0.1:6379/{number}"

    @property
    def file_workspace_url(self) -> str:
        return f"file://{self.root}/work"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        # SIGTERM (make interrupted, a CI timeout) must still reach the teardown below.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            self._create_database()
            self._weed = start_weed(
                self.root / "s3",
                s3_port=self.s3_port,
                access_key=os.environ["AWS_ACCESS_KEY_ID"],
                secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                metrics_port=self.metrics_port,
            )
            client = make_s3_client(get_settings())
            for bucket in (os.environ["S3_BUCKET"], WORKSPACE_BUCKET):
                ensure_bucket(client, bucket)
            (self.root / "work").mkdir()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is not None:
            # The stack's folder goes with it; a failed run keeps its processes' logs.
            kept = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-{self.tag}-logs-"))
            for log in self.root.glob("*.log"):
                shutil.copy(log, kept / log.name)
            print(f"bench failed; the logs of its processes are in {kept}", file=sys.stderr)
        self.close()

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()
        self.stop_api()
        if self._weed is not None:
            stop_weed(self._weed)
        for url in self.redis_urls:
            with contextlib.suppress(Exception):
                self.purge_queues(url)
        for number in self.claimed_dbs:
            with contextlib.suppress(redis.RedisError):
                release_redis_db(number)
        with contextlib.suppress(Exception):
            from tasks.runtime import engine

            engine().dispose()
        with contextlib.suppress(psycopg.Error), psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        shutil.rmtree(self.root, ignore_errors=True)

    def _create_database(self) -> None:
        from alembic import command
        from alembic.config import Config

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {self.database}")
        config = Config(str(REPO / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, checkout: Path = REPO
    ) -> ServiceProcess:
        log_path = self.root / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=checkout,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ) | (env or {}),
            )
        return ServiceProcess(name, proc, log_path)

    # -- the API -------------------------------------------------------------------------------

    def start_api(self, env: dict[str, str] | None = None, name: str = "api", checkout: Path = REPO) -> str:
        """gunicorn as `make run` starts it (gunicorn.conf.py), returned once every worker runs.
        The first one started is `api`/`api_url`; `env` overrides settings for this one alone;
        `checkout` is the source tree it runs (another commit's, to compare with)."""
        port = free_port()
        args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
        api = self._spawn(name, [*args, "api:create_app()"], env, checkout)
        self.apis.append(api)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if api.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{api.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{url}/livez", timeout=1).ok
            return False

        wait_until(answers, timeout=60, what="the API to answer /livez")
        # A load started while one worker still boots would pin every keep-alive connection to
        # the other one.
        expected = int(runpy.run_path(str(REPO / "gunicorn.conf.py"))["workers"])
        wait_until(
            lambda: len(api.python_children()) >= expected, timeout=30, what=f"{expected} gunicorn workers"
        )
        if self.api is None:
            self.api, self.api_url = api, url
        return url

    def stop_api(self) -> None:
        for api in self.apis:
            api.stop()
        self.apis.clear()
        self.api, self.api_url = None, ""

    def create_key(self, name: str = "bench") -> str:
        from models import make_engine, make_session_factory
        from services.apikeys import create_key

        engine = make_engine(os.environ["DATABASE_URL"])
        try:
            with make_session_factory(engine).begin() as session:
                _, key = create_key(session, name)
        finally:
            engine.dispose()
        return key

    # -- workers -------------------------------------------------------------------------------

    def start_workers(
        self,
        queues: tuple[str, ...] = tuple(QUEUE_CONCURRENCY),
        env: dict[str, str] | None = None,
        tag: str = "",
        *,
        concurrency: int | None = None,
        wrapper: tuple[str, ...] = (),
        checkout: Path = REPO,
    ) -> None:
        """One `celery -A tasks worker -Q <queue>` per queue, returned once each answers a ping;
        `env` overrides settings for these alone (a set with another REDIS_URL is a deployment
        of its own), `tag` tells their names apart, `concurrency` overrides the Procfile's,
        `wrapper` runs each under a command (`taskset -c 0`), `checkout` is the source tree."""
        from tasks import app

        host = os.uname().nodename
        broker = (env or {}).get("REDIS_URL", os.environ["REDIS_URL"])
        self.redis_urls.add(broker)
        started = {}
        for queue in queues:
            node = f"{queue}{tag}-bench{os.getpid()}@{host}"
            args = [
                *wrapper, sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-n", node,
                "--concurrency", str(concurrency or QUEUE_CONCURRENCY[queue]), "-E", "--loglevel", "INFO",
            ]  # fmt: skip
            if queue == "maintenance":
                args += ["--beat", "--schedule", str(self.root / f"beat{tag}")]
            started[node] = self.workers[f"{queue}{tag}"] = self._spawn(
                f"worker-{queue}{tag}", args, env, checkout
            )
        # Celery's control messages go out through its app's own broker whatever connection is
        # given, so workers on another Redis database are asked through an app of their own.
        control = (
            app.control
            if broker == app.conf.broker_url
            else Celery(broker=broker, set_as_current=False).control
        )
        for node, worker in started.items():

            def answers(worker: ServiceProcess = worker, node: str = node) -> bool:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker {worker.name} exited:\n{worker.log_tail()}")
                return bool(control.ping(destination=[node], timeout=0.5))

            wait_until(answers, timeout=90, what=f"worker {node} to answer a ping")

    def stop_workers(self, tag: str) -> None:
        """Stop the workers started with `tag` (and wait for them)."""
        for name in [name for name in self.workers if name.endswith(tag)]:
            self.workers.pop(name).stop()

    def purge_queues(self, broker: str | None = None) -> int:
        """Drop every message waiting in one of this stack's Redis databases (its own numbers)."""
        from tasks import app

        with app.connection_for_write(broker or os.environ["REDIS_URL"]) as connection:
            return int(app.control.purge(connection=connection))

    def s3_server_pid(self) -> int:
        assert self._weed is not None
        return self._weed.pid

    def bucket_traffic(self) -> dict[str, Traffic]:
        """Bytes the S3 server received and sent for each bucket so far, and its copies."""
        return bucket_traffic(f"http://127.0.0.1:{self.metrics_port}/metrics")

    # -- reading the truth ---------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        dsn = f"host=127.0.0.1 user=postgres dbname={self.database}"
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql, params).fetchall()


def make_clip(
    path: Path, *, seconds: float, size: str = "1920x1080", rate: int = 30, preset: str = "veryfast"
) -> Path:
    """A camera-like H.264 + stereo AAC mp4 (moov first, so it can be streamed)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", preset, "-crf", "20", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "192k", "-movflags", "+faststart", str(path)],
        check=True,
    )  # fmt: skip
    return path


def bare_transcode(source: Path, out_dir: Path) -> float:
    """The transcode stage's ffmpeg command, built as the stage builds it, run bare."""
    settings = get_settings()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    info = probe(source)
    storyboard = storyboard_plan_for(info, settings)
    started = time.perf_counter()
    picture = picture_plan_for(source, info, settings)
    renditions = plan_ladder(info, None, rate_control=DEFAULT_RATE_CONTROL)
    args = build_hls_command(
        source,
        info,
        renditions,
        out_dir,
        segment_seconds=settings.segment_seconds,
        audio=plan_audio(info),
        picture=picture,
        encoders=encoders_for(settings),
        storyboard=storyboard,
    )
    run_ffmpeg(args, duration=info.duration, memory_limit_bytes=settings.ffmpeg_memory_limit_bytes)
    if settings.quality_receipts and picture is not None:
        # The stage measures every rendition's quality after the transcode: so does the baseline.
        quality_scores(source, out_dir, info, picture, renditions, settings, lambda: False)
    return time.perf_counter() - started


def bare_analysis(source: Path, hls_dir: Path) -> float:
    """The local analysis as the analyze stage runs it: sound from the source, pictures from the
    smallest rendition of `hls_dir` (what bare_transcode wrote)."""
    info = probe(source)
    renditions = plan_ladder(info, None, rate_control=DEFAULT_RATE_CONTROL)
    smallest = smallest_picture([asdict(rendition) for rendition in renditions])
    pictures = hls_dir / smallest / "index.m3u8" if smallest else None
    started = time.perf_counter()
    analyze_local(source, info, pictures=pictures, ffmpeg=get_settings().ffmpeg_path)
    return time.perf_counter() - started


class WebhookReceiver:
    """Records when each job's webhook arrived (the end of a job's last stage, notify)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.perf_counter()
                self.send_response(204)
                self.end_headers()
                job_id = json.loads(body)["data"]["id"]
                with receiver.changed:
                    receiver.arrivals.setdefault(job_id, arrived)
                    receiver.changed.notify_all()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def wait_for(self, job_id: str, timeout: float) -> float:
        """perf_counter() when the webhook of `job_id` arrived."""
        with self.changed:
            if not self.changed.wait_for(lambda: job_id in self.arrivals, timeout=timeout):
                raise TimeoutError(f"no webhook for job {job_id} within {timeout:g} s")
            return self.arrivals[job_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class PeakMemory:
    """Samples VmRSS of processes every `interval` s; `peak_mib` per name, with VmHWM when read."""

    pids: Callable[[], dict[str, list[int]]]
    interval: float = 0.05
    peaks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @staticmethod
    def status_mib(pid: int, key: str) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    @staticmethod
    def reset_peak(pid: int) -> None:
        """Start the kernel's high-water mark afresh (clear_refs 5), so VmHWM covers what follows."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def sample(self) -> None:
        for name, pids in self.pids().items():
            for pid in pids:
                # VmHWM also catches a peak between two samples.
                rss = max(self.status_mib(pid, "VmRSS"), self.status_mib(pid, "VmHWM"))
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss)

    def __enter__(self) -> PeakMemory:
        for pids in self.pids().values():
            for pid in pids:
                self.reset_peak(pid)

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    ended: list[float] = []
    yield lambda: (ended[0] if ended else time.perf_counter()) - started
    ended.append(time.perf_counter())
