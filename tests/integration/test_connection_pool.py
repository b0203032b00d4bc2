"""A pooled connection the server has closed is never handed out: the checkout sees it
(without a query) and the pool opens a fresh one."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from models import make_engine

pytestmark = pytest.mark.integration


def test_a_connection_closed_by_the_server_is_replaced_at_checkout(database: str) -> None:
    engine, admin = make_engine(database), make_engine(database)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as other:  # as a restart or an idle timeout would
            assert other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first}).scalar_one()
        with engine.connect() as connection:
            again = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert again != first
    finally:
        engine.dispose()
        admin.dispose()


def test_a_single_statement_write_refuses_an_open_transaction(database: str) -> None:
    """In autocommit a submission's insert is atomic on its own; asked for after the request
    began a transaction, it would be rolled back at teardown, so it is refused instead."""
    from api import create_app
    from api.db import db, single_statement

    app = create_app()
    with app.test_request_context():
        connection = single_statement()
        assert connection.connection.dbapi_connection.autocommit is True
    with app.test_request_context():
        db().execute(text("SELECT 1"))
        with pytest.raises(RuntimeError, match="began a transaction"):
            single_statement()
