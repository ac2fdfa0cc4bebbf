"""Run the Alembic migrations from code: ``upgrade(url=None)``.

Alembic is configured programmatically (script location inside this package), so it
works from an installed wheel and from any working directory; there is no ``alembic.ini``.

The API and every worker call ``upgrade()`` on start-up, possibly at the same moment:

* PostgreSQL: a session-level advisory lock serializes them; the losers wait, then find
  the schema at head and do nothing.
* SQLite: all processes share one machine, so an exclusive ``fcntl`` lock on a file next
  to the database does the same job (SQLite's own locking would let two processes both
  read "no version" and then both try to create the tables).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from shared.db.session import default_url, get_engine, normalize_url, translate_db_errors

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed 64-bit key: "stylefarm-migrate" for pg_advisory_lock.
PG_ADVISORY_LOCK_KEY = 0x5354594C454D4947


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (no ini file)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # configparser interpolates '%', which URL-encoded passwords contain.
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (``None`` when never migrated)."""
    with translate_db_errors(), get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).expanduser().resolve().with_suffix(".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_advisory_lock(conn: Connection) -> Iterator[None]:
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_ADVISORY_LOCK_KEY})
    conn.commit()  # session-level lock: survives the commit, released explicitly below
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_ADVISORY_LOCK_KEY})
        conn.commit()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: the configured one) to ``revision``.

    Safe to call concurrently from several processes; a no-op when already at head.
    """
    resolved = normalize_url(url) if url else default_url()
    engine = get_engine(resolved)
    cfg = alembic_config(resolved)
    with translate_db_errors():
        if engine.dialect.name == "sqlite":
            with _sqlite_file_lock(resolved), engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            return
        with engine.connect() as conn:
            lock = _pg_advisory_lock(conn) if engine.dialect.name == "postgresql" else contextlib.nullcontext()
            with lock:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (tests and operators only)."""
    resolved = normalize_url(url) if url else default_url()
    cfg = alembic_config(resolved)
    with translate_db_errors(), get_engine(resolved).connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()
