"""GET /metrics: the pipeline (counters read from PostgreSQL and queue depths from Redis at
scrape time, see services/metrics.py) and this API process's own request latency."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from api.db import sessions
from api.openapi import operation
from celeryconfig import STAGE_QUEUES
from services.config import Settings
from services.health import health_redis_client
from services.metrics import PipelineCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@operation("Prometheus metrics.", access="public", tag="meta", responses={200: "text/plain"})
def metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["conveyor.metrics"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask, settings: Settings) -> None:
    """One registry per app (tests build several apps in one process).

    Request latency is measured where it happens, in this process. Under gunicorn with
    several workers on one port, a scrape reaches one of them, so its counters cover that
    worker's share of the traffic: fine for latency quantiles, not for exact request totals
    (those need prometheus-client's multiprocess mode, or one port per worker)."""
    registry = CollectorRegistry(auto_describe=True)
    with app.app_context():
        registry.register(
            PipelineCollector(sessions(), health_redis_client(settings.redis_url), STAGE_QUEUES)
        )
    latency = Histogram(
        "conveyor_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template (not raw path: ids would explode it).",
        ["method", "route", "status"],
        registry=registry,
    )
    app.extensions["conveyor.metrics"] = registry

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            latency.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response
