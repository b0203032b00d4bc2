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
# A listening socket per worker (SO_REUSEPORT), so the kernel spreads new connections over the
# workers. With one shared socket the first worker to wake accepts a burst of keep-alive
# connections alone and, bound by one GIL, serves them on one core while the others idle
# (submissions/s halved in bench/throughput.py).
reuse_port = True
timeout = 60
graceful_timeout = 30
# No access log: the app logs every request itself, as JSON with its request id and duration
# (a second line per request would cost a write under the same lock on the hot path).
accesslog = None
errorlog = "-"
