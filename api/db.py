"""One database session per request, closed when the request ends."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from models import make_engine, make_session_factory
from services.config import Settings


def init_db(app: Flask, settings: Settings) -> None:
    engine = make_engine(
        settings.database_url,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
    )
    app.extensions["conveyor.engine"] = engine
    app.extensions["conveyor.sessions"] = make_session_factory(engine)

    @app.teardown_appcontext
    def _close(_: BaseException | None) -> None:
        session: Session | None = g.pop("db", None)
        if session is not None:
            session.close()


def sessions() -> sessionmaker[Session]:
    factory: sessionmaker[Session] = current_app.extensions["conveyor.sessions"]
    return factory


def db() -> Session:
    if "db" not in g:
        g.db = sessions()()
    session: Session = g.db
    return session


def single_statement() -> Connection:
    """The request's connection in autocommit, for a request whose writes are one statement:
    PostgreSQL runs it atomically on its own, and the BEGIN and COMMIT round trips are saved.
    Only before the request's session has touched the database: SQLAlchemy would otherwise keep
    the transaction it began and only warn, and the write would be rolled back at teardown."""
    session = db()
    if session.in_transaction():
        raise RuntimeError("single_statement() after the request's session began a transaction")
    return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def lookup_connection() -> Connection:
    """A connection of its own in autocommit, for a read outside the request's transaction."""
    engine: Engine = current_app.extensions["conveyor.engine"]
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
