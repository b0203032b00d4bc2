"""The time the stage contract reads: the database's own, so every worker and the sweeper agree
whatever their hosts' clocks say; a test passes a clock it moves by hand to expire leases."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement


class Clock(Protocol):
    def now(self) -> ColumnElement[datetime]:
        """The current instant, as a SQL expression."""
        ...


class DatabaseClock:
    """PostgreSQL's now(): the start of the current transaction."""

    def now(self) -> ColumnElement[datetime]:
        return func.now()


DATABASE_CLOCK = DatabaseClock()
