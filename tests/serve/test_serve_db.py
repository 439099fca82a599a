"""Database: Alembic migrations match the models, upgrade/downgrade on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from mammolens.errors import ConfigError
from mammolens.serve.db import (
    Database,
    current_revision,
    downgrade,
    normalise_url,
    table_names,
    upgrade,
)

TABLES = ["alembic_version", "auth_sessions", "images", "outputs", "reader_cases", "reads", "studies", "users"]


def test_migrations_match_models_and_round_trip(db_url: str):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from mammolens.serve.models import Base

    db = Database(db_url)
    try:
        assert table_names(db.engine) == TABLES
        assert current_revision(db.engine) == "0002"
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        downgrade(db.engine, "base")
        assert table_names(db.engine) == ["alembic_version"]
        upgrade(db.engine)
        upgrade(db.engine)  # idempotent
        assert table_names(db.engine) == TABLES
    finally:
        db.dispose()


def test_url_checks():
    assert normalise_url("postgresql://u@h:5/d") == "postgresql+psycopg://u@h:5/d"
    assert normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="unsupported"):
        normalise_url("mysql://u@h/d")
