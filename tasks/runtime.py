"""What a worker process holds for all its tasks: settings, the database, the workspace and
its private scratch folder."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_init
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from models import make_engine, make_session_factory
from services.config import get_settings
from services.storage import Delivery, ensure_bucket, make_delivery
from services.workspace import Workspace, open_workspace
from services.workspace.scratch import KeptSource, Scratch

if TYPE_CHECKING:
    from tasks.base import StageContext


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
    return open_workspace(get_settings())


@lru_cache(maxsize=1)
def scratch() -> Scratch:
    made = Scratch(get_settings().scratch_dir)
    atexit.register(made.remove)
    return made


@lru_cache(maxsize=1)
def kept_source() -> KeptSource:
    return KeptSource(scratch())


@contextlib.contextmanager
def attempt_scratch(ctx: StageContext) -> Iterator[Path]:
    """A folder in this process's scratch for one stage (or part) attempt, removed when it ends."""
    part = "" if ctx.part is None else f"-part{ctx.part.index}"
    with scratch().folder(f"{ctx.job_id}-{ctx.stage}{part}-{ctx.attempt}") as folder:
        yield folder


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
    # boto3 clients are not safe across a fork either.
    workspace.cache_clear()
