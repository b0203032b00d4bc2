"""The declarative base and the engine/session factory."""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# Stable constraint names so Alembic autogenerate and hand-written migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(
    url: str, *, connect_timeout_seconds: float | None = None, statement_timeout_seconds: float | None = None
) -> Engine:
    """The engine of one process. With timeouts (workers and the API set them; migrations, which
    may rightly run long, do not) a database that stops answering fails a call in bounded time
    instead of holding it: a heartbeat must get its answer, or its error, before its lease runs out."""
    connect_args: dict[str, Any] = {}
    if connect_timeout_seconds:
        connect_args["connect_timeout"] = max(1, round(connect_timeout_seconds))
    if statement_timeout_seconds:
        connect_args["options"] = f"-c statement_timeout={round(statement_timeout_seconds * 1000)}"
    engine = create_engine(url, pool_size=5, max_overflow=5, future=True, connect_args=connect_args)
    event.listen(engine, "checkout", _refuse_closed_by_server)
    return engine


def _refuse_closed_by_server(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Check a pooled connection before it is handed out, so a restarted PostgreSQL costs a
    fresh connection, not a failed request or task.

    SQLAlchemy's pool_pre_ping does this with a query, one round trip per checkout, which was a
    tenth of a job submission. An idle connection has nothing to read unless the server has
    closed it (restart, idle timeout, pooler) and said so: one poll() tells, without a round
    trip. The pool replaces a connection refused here with a new one.
    """
    if dbapi_connection.closed:
        raise DisconnectionError("connection closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed this connection")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
