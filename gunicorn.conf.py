"""gunicorn settings for the API, read from the working directory by every way we start it
(Procfile, Dockerfile.api, docker compose, bench). Command-line flags still win."""

import os

bind = os.environ.get("API_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not sync workers: an upload of gigabytes or an open SSE stream would otherwise hold
# a whole worker and, past `timeout`, get it killed mid-request. With gthread the worker's
# main thread keeps heart-beating while request threads stream.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 30
# No access log: the app logs every request itself, as JSON with its request id and duration
# (a second line per request would cost a write under the same lock on the hot path).
accesslog = None
errorlog = "-"
