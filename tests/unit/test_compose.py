"""docker-compose.yml cannot be run here (no Docker engine), so it is checked by reading: every
service's command, environment and dependencies against what the code reads, and that the
services share nothing but the PostgreSQL, Redis and S3 endpoints (no volume)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from celeryconfig import MAINTENANCE_QUEUE, QUEUES
from services.config import Settings
from services.workspace import S3Workspace, open_workspace

ROOT = Path(__file__).resolve().parents[2]
# Read by boto3, Flower, gunicorn, the worker image's CMD, or compose itself; not by Settings.
OUTSIDE_SETTINGS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLOWER_BASIC_AUTH"} | {
    "WEB_CONCURRENCY", "QUEUES", "CONCURRENCY",
}  # fmt: skip
REQUIRED_APP_SETTINGS = {
    "DATABASE_URL",
    "REDIS_URL",
    "WORKSPACE_URL",
    "S3_ENDPOINT_URL",
    "CONVEYOR_SECRET_KEY",
}
APP_SERVICES = (
    "api",
    "maintenance-worker",
    "fetch-worker",
    "video-worker",
    "upload-worker",
    "analyze-worker",
    "notify-worker",
    "maintenance-worker",
    "beat",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    text = (ROOT / "docker-compose.yml").read_text()
    # Interpolate ${VAR:-default} and ${VAR:?message} as compose would with nothing set.
    text = re.sub(r"\$\{([A-Z0-9_]+):[-?]([^}]*)\}", lambda m: m.group(2) or "x", text)
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else name.upper())
    return names


def test_every_queue_has_exactly_one_worker_service(compose: dict[str, Any]) -> None:
    served = {}
    for name, service in compose["services"].items():
        queues = service.get("environment", {}).get("QUEUES")
        if queues and "command" not in service:
            served[name] = queues.split(",")
    assert sorted(q for qs in served.values() for q in qs) == sorted((*QUEUES, MAINTENANCE_QUEUE))
    assert served["video-worker"] == ["video"]
    assert compose["services"]["video-worker"]["deploy"]["replicas"] >= 1


def test_app_services_read_only_settings_the_code_knows(compose: dict[str, Any]) -> None:
    known = setting_names() | OUTSIDE_SETTINGS
    for name in (*APP_SERVICES, "flower"):
        environment = set(compose["services"][name]["environment"])
        assert environment <= known, f"{name} sets unknown variables {sorted(environment - known)}"
        assert environment >= REQUIRED_APP_SETTINGS, (
            f"{name} lacks {sorted(REQUIRED_APP_SETTINGS - environment)}"
        )


def test_workers_and_api_share_no_volume_only_the_workspace_bucket(compose: dict[str, Any]) -> None:
    services = compose["services"]
    buckets = set()
    for name in (*APP_SERVICES, "flower"):
        service = services[name]
        assert not service.get("volumes"), f"{name} mounts {service['volumes']}"
        workspace = open_workspace(Settings(workspace_url=service["environment"]["WORKSPACE_URL"]))
        assert isinstance(workspace, S3Workspace), f"{name} has a workspace that is not an object store"
        buckets.add(workspace.bucket)
    [bucket] = buckets
    setup = "\n".join(services["createbucket"]["entrypoint"])
    assert f"mc mb --ignore-existing conveyor/{bucket}" in setup
    # Only the delivery bucket is readable anonymously; the workspace stays private.
    assert [line for line in setup.splitlines() if "anonymous" in line and bucket in line] == []
    assert services["api"]["depends_on"]["createbucket"]["condition"] == "service_completed_successfully"
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "miniodata"}
    for dockerfile in ("Dockerfile.api", "Dockerfile.worker"):
        assert "/var/lib/conveyor/work" not in (ROOT / dockerfile).read_text()


def test_dependencies_wait_for_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "minio"} <= set(services["api"]["depends_on"])
    for name in APP_SERVICES[1:]:
        # Workers start after the API, whose start runs the migrations.
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy"
    for name, service in services.items():
        if name != "createbucket":
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_commands_match_the_entry_points(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_command = "\n".join(services["api"]["command"])
    assert "alembic upgrade head" in api_command and "'api:create_app()'" in api_command
    assert services["beat"]["command"][:4] == ["celery", "-A", "tasks", "beat"]
    assert services["flower"]["command"][:4] == ["celery", "-A", "tasks", "flower"]
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes"]
    dockerfile = (ROOT / "Dockerfile.worker").read_text()
    assert 'celery -A tasks worker -Q \\"${QUEUES}\\"' in dockerfile
    assert "USER conveyor" in dockerfile and "apt-get install" in dockerfile and "ffmpeg" in dockerfile


def seconds(duration: str) -> float:
    """Compose's duration ("90s", "2m", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"([\d.]+)([hms])", duration))


def test_compose_waits_out_the_shutdown_grace_of_every_worker(compose: dict[str, Any]) -> None:
    grace = Settings().shutdown_grace_seconds
    for name in APP_SERVICES:
        if name in ("api", "beat"):
            continue
        stop = compose["services"][name].get("stop_grace_period", "10s")
        assert seconds(stop) > grace, f"{name} is killed after {stop}, before its {grace:g} s grace"
