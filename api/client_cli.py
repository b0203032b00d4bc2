"""The client half of the CLI: `flask --app api submit|jobs|job|retry|cancel` talk to a running
Conveyor over its HTTP API, as any client would (CONVEYOR_API_URL, CONVEYOR_API_KEY)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests
from flask import Flask
from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

ENDED = ("succeeded", "failed", "canceled")
FOLLOW_POLL_SECONDS = 0.5
console = Console(stderr=True)


class Api:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self.http.request(
                method, self.base_url + path, timeout=kwargs.pop("timeout", 30), **kwargs
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.base_url}: {exc}") from exc
        body = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
        if answer.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise click.ClickException(
                f"{error.get('code', answer.status_code)}: {error.get('message', answer.text[:200])}"
            )
        return body

    def upload(self, path: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Stream the file (never read whole) with a progress bar of the bytes sent."""
        with path.open("rb") as body, _bytes_progress() as progress:
            encoder = MultipartEncoder(
                {"file": (path.name, body, "application/octet-stream"), "options": json.dumps(options)}
            )
            task = progress.add_task(f"upload {path.name}", total=encoder.len)
            monitor = MultipartEncoderMonitor(
                encoder, lambda m: progress.update(task, completed=m.bytes_read)
            )
            job: dict[str, Any] = self.call(
                "POST",
                "/api/v1/uploads",
                data=monitor,
                headers={"Content-Type": monitor.content_type},
                timeout=3600,
            )
        return job


def _bytes_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    )


def follow(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """One progress bar per stage until the job ends."""
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as bars:
        tasks: dict[str, TaskID] = {
            stage["name"]: bars.add_task(stage["name"], total=100, status=stage["status"])
            for stage in job["stages"]
        }
        while True:
            for stage in job["stages"]:
                done = 100 if stage["status"] in ("succeeded", "skipped") else stage["progress"]
                bars.update(tasks[stage["name"]], completed=done, status=stage["status"])
            if job["status"] in ENDED:
                return job
            time.sleep(FOLLOW_POLL_SECONDS)
            job = api.call("GET", f"/api/v1/jobs/{job['id']}")


def report(job: dict[str, Any]) -> None:
    if job["status"] == "succeeded":
        click.echo(job["result"]["playback_url"])
        return
    error = job.get("error") or {}
    console.print(f"[red]job {job['id']} {job['status']}[/red]: {error.get('code')}: {error.get('message')}")
    sys.exit(1)


def register_client_cli(app: Flask) -> None:
    api_url = click.option(
        "--api-url",
        envvar="CONVEYOR_API_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="Conveyor's API.",
    )
    api_key = click.option(
        "--key", envvar="CONVEYOR_API_KEY", required=True, help="API key (or CONVEYOR_API_KEY)."
    )

    @app.cli.command("submit")
    @click.argument("source")
    @click.option("--renditions", help="Comma-separated, e.g. 240p,720p (default: all up to the source).")
    @click.option("--webhook", "webhook_url", help="URL for the signed webhook when the job ends.")
    @click.option(
        "--follow/--no-follow", "follow_job", default=False, help="Show progress until the job ends."
    )
    @api_url
    @api_key
    def submit(
        source: str, renditions: str | None, webhook_url: str | None, follow_job: bool, **conn: str
    ) -> None:
        """Submit a file (uploaded with a progress bar) or an http(s) URL."""
        api = Api(conn["api_url"], conn["key"])
        options: dict[str, Any] = {}
        if renditions:
            options["renditions"] = [name.strip() for name in renditions.split(",") if name.strip()]
        if webhook_url:
            options["webhook_url"] = webhook_url
        if source.startswith(("http://", "https://")):
            job = api.call("POST", "/api/v1/jobs", json={"source": {"url": source}, "options": options})
        else:
            path = Path(source)
            if not path.is_file():
                raise click.ClickException(f"{source} is neither a file nor an http(s) URL")
            job = api.upload(path, options)
        console.print(f"job {job['id']} {job['status']}")
        if follow_job:
            report(follow(api, job))
        else:
            click.echo(job["id"])

    @app.cli.command("jobs")
    @click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "canceled"]))
    @click.option("--limit", default=20, show_default=True)
    @api_url
    @api_key
    def jobs(status: str | None, limit: int, **conn: str) -> None:
        """List your jobs, newest first."""
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        page = Api(conn["api_url"], conn["key"]).call("GET", "/api/v1/jobs", params=params)
        table = Table("id", "status", "stage", "progress", "created")
        for job in page["jobs"]:
            table.add_row(
                job["id"], job["status"], job["stage"] or "-", f"{job['progress']:.0f}%", job["created_at"]
            )
        Console().print(table)

    for name, method, path, summary in (
        ("job", "GET", "/api/v1/jobs/{}", "Show one job as JSON."),
        ("retry", "POST", "/api/v1/jobs/{}/retry", "Re-run a failed job from its failed stage."),
        ("cancel", "POST", "/api/v1/jobs/{}/cancel", "Cancel a job; a running ffmpeg is stopped."),
    ):
        app.cli.command(name, help=summary)(_single_job_command(method, path, api_url, api_key))


def _single_job_command(method: str, path: str, api_url: Any, api_key: Any) -> Any:
    @click.argument("job_id")
    @api_url
    @api_key
    def command(job_id: str, **conn: str) -> None:
        click.echo(json.dumps(Api(conn["api_url"], conn["key"]).call(method, path.format(job_id)), indent=2))

    return command
