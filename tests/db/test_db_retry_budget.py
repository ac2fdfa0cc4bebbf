"""One retry budget, ``Settings.max_attempts``: the worker's retries of transient errors and
the reconciler's requeues of silent jobs both stop at it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from shared.db.orm import Job, utcnow
from shared.db.session import session_scope
from shared.errors import StorageUnavailable
from shared.jobs import store
from shared.jobs.methods import REGISTRY
from shared.settings import Settings, get_settings

from harness import RedisServer

SPEC = {"method": "fast", "content": "a" * 64}


@pytest.fixture
def max_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """``STYLEFARM_MAX_ATTEMPTS=2`` (neither the default nor an old constant) for code that
    reads ``get_settings()``."""
    monkeypatch.setenv("STYLEFARM_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    yield get_settings().max_attempts
    monkeypatch.delenv("STYLEFARM_MAX_ATTEMPTS")
    get_settings.cache_clear()


def test_given_default_settings_expect_one_documented_budget() -> None:
    field = Settings.model_fields["max_attempts"]
    assert Settings().max_attempts == field.default >= 1 and "retry budget" in (field.description or "")


def test_given_a_transient_error_every_time_when_the_task_runs_expect_failed_after_max_attempts(
    db_url: str, max_attempts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.tasks import execute_job

    def engine(spec: Any, ctx: Any) -> Any:
        raise StorageUnavailable("storage is down (test)")

    module, _, function = REGISTRY["fast"].entry_point.partition(":")
    monkeypatch.setattr(importlib.import_module(module), function, engine)
    job, _ = store.create_job("t1", SPEC)

    # eagerly, each Celery retry runs at once in this process (no backoff wait)
    assert execute_job.apply(args=[job.id], task_id="task-1").get() == "failed"

    done = store.get_job(job.id)
    assert done.status == "failed" and done.attempts == max_attempts == 2
    assert done.error["type"].endswith("/storage-unavailable")


def _stale_running_job(attempts: int) -> str:
    job, _ = store.create_job("t1", SPEC)
    for i in range(attempts):
        assert store.claim_job(job.id, task_id="task-1", worker="w1") is not None
        if i < attempts - 1:
            store.requeue_job(job.id, task_id="task-1")
    with session_scope() as session:  # its worker stopped writing progress an hour ago
        session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow() - timedelta(hours=1)))
    return job.id


@pytest.mark.parametrize(("attempts", "expect"), [(1, "queued"), (2, "failed")])
def test_given_a_silent_worker_when_reconciled_expect_requeued_below_the_budget_failed_at_it(
    db_url: str, max_attempts: int, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
    attempts: int, expect: str,
) -> None:
    import redis

    from worker.reconcile import reconcile

    url = redis_server.url.rsplit("/", 1)[0] + "/9"  # not database 0, which the farms consume
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    settings = Settings()
    assert settings.max_attempts == max_attempts == 2
    job_id = _stale_running_job(attempts)

    try:
        report = reconcile(grace_s=0, settings=settings)
    finally:
        redis.Redis.from_url(url).flushdb()

    assert store.get_job(job_id).status == expect and store.get_job(job_id).attempts == attempts
    assert job_id in (report.requeued if expect == "queued" else report.failed), report
