"""Fixtures for the database tests: a migrated scratch database per test.

``db_url`` runs every test on a SQLite file database and again on a fresh PostgreSQL
database: on the server ``STYLEFARM_TEST_POSTGRES_URL`` names, else on the harness's own
(``postgres_server``; a machine that cannot run PostgreSQL fails these tests, see
``harness.missing_backend``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.db import session as db_session
from shared.db.migrate import upgrade

POSTGRES_ENV = "STYLEFARM_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty scratch database on the ``STYLEFARM_TEST_POSTGRES_URL`` server, or on the
    harness's PostgreSQL when that is unset; dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV) or request.getfixturevalue("postgres_server").url("postgres")
    base_url = make_url(db_session.normalize_url(base))
    name = f"sf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.set(database=name).render_as_string(hide_password=False)
    finally:
        db_session.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database, set as the process default for ``shared.jobs.store``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stylefarm.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    upgrade(url)
    db_session.configure(url)
    yield url
    db_session.configure(None)
    db_session.dispose_engines()
