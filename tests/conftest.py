"""Session fixtures that start real servers (see ``tests/harness.py``) and stop them by pid.

* ``STYLEFARM_HOME`` points at a fresh temp dir for the whole session (set before any
  test imports ``shared.settings``), removed at the end.
* ``redis_server`` -> ``RedisServer`` (``.url``, ``.process``)
* ``postgres_server`` -> ``PostgresServer`` (``.url(db)``, ``.create_database(name)``);
  started on first use (tests/db's ``postgres_database`` asks for it unless
  ``STYLEFARM_TEST_POSTGRES_URL`` names a server).
* ``s3_server`` -> ``S3Server`` (moto; ``.endpoint``, ``.bucket``, ``.client()``, ``.keys()``)
* ``farm`` -> ``Farm``: API + 2 Celery prefork workers, parametrized over the backends
  ``postgres-s3`` (PostgreSQL + moto S3) and ``sqlite-local`` (SQLite + local storage).

A backend that cannot be started (no PostgreSQL binaries, no moto) FAILS the tests that need
it, so CI cannot go green without it; ``STYLEFARM_ALLOW_MISSING_BACKENDS=1`` turns that into a
skip for a developer's partial run (``harness.missing_backend``).
* ``job_db`` -> the URL of a migrated SQLite database in the test's tmp dir, made the default
  of ``shared.jobs.store`` for the test (tasks run eagerly in the test process use it).
* When tests that use ``postgres_database`` (tests/db) are collected and
  ``STYLEFARM_TEST_POSTGRES_URL`` is unset, the harness's PostgreSQL is started and that
  variable set to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="stylefarm-test-home-"))
os.environ["STYLEFARM_HOME"] = str(_SESSION_HOME)
# Hundreds of in-process API apps start in this one process: each freeze's full collection
# (shared.process_gc) would walk everything alive here. The farms' processes (tests/harness.py
# does not pass STYLEFARM_* on) freeze as in production; tests/test_process_gc.py tests it.
os.environ["STYLEFARM_GC_FREEZE"] = "0"

from harness import (  # noqa: E402 - after STYLEFARM_HOME is set (tests/ is on sys.path)
    Farm,
    PostgresServer,
    RedisServer,
    S3Server,
    StackError,
    Unavailable,
    missing_backend,
    start_farm,
)

BACKENDS = ["sqlite-local", "postgres-s3"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "farm" in names and "e2e" not in item.keywords:
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer.start(servers_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except Unavailable as exc:
        missing_backend("PostgreSQL", exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(servers_dir: Path) -> Iterator[S3Server]:
    try:
        server = S3Server.start(servers_dir)
    except Unavailable as exc:
        missing_backend("The S3 server (moto)", exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def farm(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    backend: str = request.param
    postgres = s3 = None
    if backend == "postgres-s3":
        postgres = request.getfixturevalue("postgres_server")
        s3 = request.getfixturevalue("s3_server")
    home = tmp_path_factory.mktemp(f"farm-{backend}")
    try:
        f = start_farm(backend, home=home, redis=redis_server, postgres=postgres, s3=s3, workers=2)
    except StackError as exc:
        pytest.fail(f"could not start the {backend} farm: {exc}")
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def job_db(tmp_path: Path) -> Iterator[str]:
    from shared.db import session as db_session
    from shared.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    db_session.configure(url)
    yield url
    db_session.configure(None)
    db_session.dispose_engines()


@pytest.fixture(autouse=True)
def _fresh_input_cache() -> Iterator[None]:
    """Each test starts with an empty worker input cache (``worker.input_cache`` keeps one per
    process, and this process runs every in-process test)."""
    import sys

    module = sys.modules.get("worker.input_cache")
    if module is not None:
        module._cache = None
    yield


@pytest.fixture(autouse=True)
def _thaw_frozen_objects() -> Iterator[None]:
    """The API's start-up freezes every object alive (``shared.process_gc``): in this process
    that is the test's own app, client and fixtures too. Thaw them after each test, so they
    are collected as before and nothing frozen outlives its test."""
    import gc

    yield
    if gc.get_freeze_count():
        gc.unfreeze()
