"""A clock for the stage contract that moves only when a test says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, literal
from sqlalchemy.sql.elements import ColumnElement


class FixedClock:
    def __init__(self, at: datetime | None = None) -> None:
        # Far from the database's own now(), so rows written by the real clock never look due.
        self.at = at or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> ColumnElement[datetime]:
        return literal(self.at, DateTime(timezone=True))

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
