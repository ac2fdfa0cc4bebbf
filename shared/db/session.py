"""Engines and sessions, from ``Settings.resolved_database_url``.

* SQLite (the embedded default): WAL journal, a busy timeout so concurrent writers wait
  instead of failing, foreign keys on, and ``check_same_thread=False`` because Celery
  and the API hand connections between threads.
* PostgreSQL through psycopg 3: ``postgresql://`` and ``postgres://`` URLs are rewritten
  to ``postgresql+psycopg://`` so operators can paste a plain libpq URL.

Connection-level failures surface as ``shared.errors.DatabaseUnavailable`` (retryable),
so the worker retries them and the API answers 503 instead of 500.

Nothing waits long: PostgreSQL connects within ``PG_CONNECT_TIMEOUT_S``, a request waits at
most ``PG_POOL_TIMEOUT_S`` for a pooled connection, and ``configure(url,
statement_timeout_s=...)`` (the API) gives the default engine's sessions a server-side
``statement_timeout``: a statement stuck on a lock or a slow plan is canceled and the request
answers 503. Engines for an explicit URL (migrations) have no statement timeout.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeGuard

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from shared.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 15_000
PG_CONNECT_TIMEOUT_S = 5
PG_POOL_TIMEOUT_S = 5

_lock = threading.Lock()
#: Engines by (URL, statement timeout in ms; 0 = none).
_engines: dict[tuple[str, int], Engine] = {}
_sessionmakers: dict[tuple[str, int], sessionmaker[Session]] = {}
_default_url: str | None = None
_default_statement_timeout_ms = 0


def normalize_url(url: str) -> str:
    """Rewrite libpq-style PostgreSQL URLs to the psycopg 3 dialect; leave others alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The libpq connection URL of a PostgreSQL URL (no ``+psycopg`` driver part), for psycopg
    connections made outside SQLAlchemy (the API's LISTEN session)."""
    return make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def configure(url: str | None, *, statement_timeout_s: float | None = None) -> None:
    """Set the process-wide default database URL (``None`` = from ``get_settings()``) and
    the statement timeout of its sessions (PostgreSQL only; ``None`` or 0 = none).

    ``create_app(settings)`` and the worker call this so that every ``shared.jobs.store``
    function, which opens its own short session, talks to the configured database.
    """
    global _default_url, _default_statement_timeout_ms
    _default_url = normalize_url(url) if url else None
    _default_statement_timeout_ms = int((statement_timeout_s or 0) * 1000)


def default_url() -> str:
    """The URL ``get_engine()`` uses when none is given."""
    if _default_url:
        return _default_url
    from shared.settings import get_settings

    return normalize_url(get_settings().resolved_database_url)


def _set_sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


#: Connections each process keeps open. The API answers up to 40 requests at once (its thread
#: pool); with SQLAlchemy's default 5 kept, every request beyond the fifth concurrent one opened
#: and closed a PostgreSQL connection (a server process fork and a handshake). 16 kept + 16 more
#: under load per process, opened only when needed: an API replica and a few workers stay far
#: below PostgreSQL's default max_connections (100).
PG_POOL_SIZE = 16
PG_POOL_OVERFLOW = 16


def _create_engine(url: str, statement_timeout_ms: int = 0) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        }
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, otherwise every checkout would see a new empty database.
            kwargs["poolclass"] = StaticPool
        else:
            from pathlib import Path

            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if statement_timeout_ms > 0:
            connect_args["options"] = f"-c statement_timeout={statement_timeout_ms}"
        return create_engine(
            parsed,
            pool_pre_ping=True,  # drop connections a restarted PostgreSQL has closed
            pool_timeout=PG_POOL_TIMEOUT_S,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_POOL_OVERFLOW,
            connect_args=connect_args,
        )
    return create_engine(parsed, pool_pre_ping=True)


def _engine_key(url: str | None) -> tuple[str, int]:
    """An explicit URL gets no statement timeout; the default URL gets the configured one
    (PostgreSQL only: other databases share one engine per URL)."""
    if url:
        return normalize_url(url), 0
    default = default_url()
    return default, _default_statement_timeout_ms if _backend_name(default) == "postgresql" else 0


@functools.lru_cache(maxsize=64)
def _backend_name(url: str) -> str:
    """The URL's backend (parsing a URL costs more than a short query's own Python: cached)."""
    return make_url(url).get_backend_name()


def _cached_engine(key: tuple[str, int]) -> Engine:
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = _create_engine(*key)
                _sessionmakers[key] = sessionmaker(engine, expire_on_commit=False)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The (cached, one per URL) engine for ``url`` or for the default URL."""
    return _cached_engine(_engine_key(url))


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """The (cached) sessionmaker bound to ``get_engine(url)``."""
    key = _engine_key(url)
    _cached_engine(key)
    return _sessionmakers[key]


def dispose_engines(close: bool = True) -> None:
    """Close every pooled connection and forget the engines (tests, forked workers).

    A process forked from one that holds connections passes ``close=False``: it drops its
    copies without closing them, so the parent's connections keep working.
    """
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()
        _sessionmakers.clear()


def is_unavailable_error(exc: BaseException) -> TypeGuard[sa_exc.DBAPIError]:
    """True for errors that mean "the database cannot be reached right now"."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Re-raise connection-level SQLAlchemy errors as ``DatabaseUnavailable``."""
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        if is_unavailable_error(exc):
            raise DatabaseUnavailable(
                f"The database is unavailable ({type(getattr(exc, 'orig', None) or exc).__name__}); try again shortly."
            ) from exc
        raise


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A short transaction: commit on success, roll back on error, always close.

    Connection failures become ``DatabaseUnavailable``; other errors pass through.
    """
    with translate_db_errors():
        session = get_sessionmaker(url)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


@contextmanager
def read_scope(url: str | None = None) -> Iterator[Session]:
    """A session for reads only, with no transaction around them (the connection in autocommit):
    no BEGIN and COMMIT round trips (two of PostgreSQL's statements per read), each statement
    sees the data committed when it runs. For reads of one statement (a job, its revision, a
    page of jobs, an input, a model: what the API's polls, event streams and submits and the
    workers read); anything that writes, or needs several reads to agree, uses
    ``session_scope``.
    SQLite (no round trips to save; one shared connection in memory) gets ``session_scope``."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        with session_scope(url) as session:
            yield session
        return
    with translate_db_errors(), engine.connect() as conn:
        session = get_sessionmaker(url)(bind=conn.execution_options(isolation_level="AUTOCOMMIT"))
        try:
            yield session
        finally:
            session.close()
