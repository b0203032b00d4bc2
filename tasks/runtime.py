"""What a worker process holds for all its tasks: settings, the database, the workspace."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from models import make_engine, make_session_factory
from services.config import get_settings
from services.storage import Delivery, ensure_bucket, make_delivery
from services.workspace import Workspace


@lru_cache(maxsize=1)
def engine() -> Engine:
    settings = get_settings()
    return make_engine(
        settings.database_url,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
    )


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


@lru_cache(maxsize=1)
def workspace() -> Workspace:
    return Workspace.from_url(get_settings().workspace_url)


@lru_cache(maxsize=1)
def delivery() -> Delivery:
    settings = get_settings()
    ready = make_delivery(settings)
    # The bucket's CORS is set-up's business (`flask --app api setup-bucket`), never a worker's:
    # a worker rewriting it would undo what an operator set.
    ensure_bucket(ready.client, ready.bucket)
    return ready


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A connection inherited across fork would be shared by two processes.
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    delivery.cache_clear()
