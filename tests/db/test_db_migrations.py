"""Alembic migrations: they build exactly the ORM schema, on SQLite and PostgreSQL, and
concurrent start-ups migrate once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import session as db_session
from shared.db.migrate import current_revision, downgrade, head_revision, upgrade
from shared.db.orm import Base
from shared.errors import DatabaseUnavailable


def schema_diff(url: str) -> list:
    with db_session.get_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def concurrent_upgrades(url: str, n: int = 4) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        barrier.wait()
        try:
            upgrade(url)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def check_migrations(url: str) -> None:
    """Shared body of the SQLite and PostgreSQL tests."""
    assert current_revision(url) is None
    assert concurrent_upgrades(url) == []
    assert current_revision(url) == head_revision()
    assert schema_diff(url) == []
    upgrade(url)  # a second start-up is a no-op
    downgrade(url)
    assert current_revision(url) is None
    assert set(inspect(db_session.get_engine(url)).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert schema_diff(url) == []


def test_given_empty_sqlite_when_upgraded_concurrently_expect_orm_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    try:
        check_migrations(url)
    finally:
        db_session.dispose_engines()


def test_given_unreachable_postgres_expect_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        upgrade("postgresql://nobody@127.0.0.1:1/none")
    assert info.value.retryable
    db_session.dispose_engines()


def test_postgres_url_scheme_is_rewritten_to_psycopg3() -> None:
    assert db_session.normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert db_session.normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert db_session.normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_given_empty_postgres_when_upgraded_concurrently_expect_orm_schema(postgres_database: str) -> None:
    check_migrations(postgres_database)
