"""The Flask app: a thin layer that records jobs and dispatches them (`flask --app api`)."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Blueprint, Flask, g, request
from flask.wrappers import Response

from api import health, jobs, openapi, playback, queue, uploads, web, webhooks
from api.auth import authenticate
from api.cli import register_cli
from api.db import init_db
from api.errors import register_error_handlers
from api.limits import init_limits
from api.metrics import bp as metrics_bp
from api.metrics import init_metrics
from services.apikeys import RecentKeys
from services.config import Settings, get_settings
from services.events import EventFeed
from services.logs import configure_logging, log_context
from services.workspace import open_workspace

log = logging.getLogger("conveyor.api")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.request_class = uploads.StreamingUploadRequest
    # Refused from the Content-Length header, before a byte of the body is read.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["conveyor.settings"] = settings
    app.extensions["conveyor.workspace"] = open_workspace(settings)
    init_db(app, settings)
    app.extensions["conveyor.keys"] = RecentKeys(settings.api_key_cache_seconds)
    app.extensions["conveyor.feed"] = EventFeed(app.extensions["conveyor.sessions"])
    playback.init_playback(app, settings)
    health.init_health(app, settings)
    queue.init_queue_health(app, settings)
    register_error_handlers(app)
    register_cli(app)
    init_limits(app, settings)
    init_metrics(app, settings)

    v1 = Blueprint("v1", __name__, url_prefix="/api/v1")
    v1.before_request(authenticate)
    v1.register_blueprint(jobs.bp)
    v1.register_blueprint(uploads.bp)
    v1.register_blueprint(queue.bp)
    v1.register_blueprint(webhooks.bp)
    v1.register_blueprint(playback.bp)
    v1.register_blueprint(openapi.bp)
    app.register_blueprint(v1)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(web.bp)
    app.teardown_request(uploads.discard_uploads)
    _log_requests(app)
    return app


def _loggable_path() -> str:
    """The request's path, except where the path is a credential (playback tokens): there the
    route template."""
    if request.url_rule is not None and "<token>" in request.url_rule.rule:
        return request.url_rule.rule
    return request.path


def _log_requests(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.request_id
        with log_context(request_id=g.request_id):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": _loggable_path(),
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - g.started) * 1000, 1),
                },
            )
        return response
