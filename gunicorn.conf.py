"""gunicorn settings for the API, read from the working directory by every way we start it
(Procfile, Dockerfile.api, docker compose, bench). Command-line flags still win."""

import os

bind = os.environ.get("API_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent, not threads: an open progress stream (SSE, up to ten minutes) or a slow upload is a
# greenlet waiting on its socket, not one of a few request threads, so browser tabs cannot
# starve /livez or submissions (bench/streams.py: with gthread's 8 threads a ninth stream
# already stalled /livez; with gevent hundreds do not). psycopg (3.1.14+), redis-py and
# boto3 all wait cooperatively once gunicorn has monkey-patched the standard library.
worker_class = "gevent"
# Connections one worker holds at once (open streams count).
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "1000"))
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
