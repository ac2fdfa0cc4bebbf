"""One attempt budget, ``Settings.max_attempts``, counted at claim time: the worker's retries of
transient errors, the sweeper's requeues of jobs whose lease expired and graceful leave's
hand-backs all stop at it."""

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


def _expired_running_job(attempts: int) -> str:
    """A job that ran ``attempts`` times and whose last holder stopped renewing its lease."""
    job, _ = store.create_job("t1", SPEC)
    for i in range(attempts):
        claimed = store.claim_job(job.id, task_id="task-1", worker="w1")
        assert claimed is not None
        if i < attempts - 1:
            store.requeue_job(job.id, token=claimed.fencing_token)
    with session_scope() as session:  # its worker died a minute ago
        session.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - timedelta(minutes=1)))
    return job.id


@pytest.mark.parametrize(("attempts", "expect"), [(1, "queued"), (2, "failed")])
def test_given_an_expired_lease_when_swept_expect_requeued_below_the_budget_failed_at_it(
    db_url: str, max_attempts: int, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
    attempts: int, expect: str,
) -> None:
    import redis

    from worker.sweeper import sweep

    url = redis_server.url.rsplit("/", 1)[0] + "/9"  # not database 0, which the farms consume
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    settings = Settings()
    assert settings.max_attempts == max_attempts == 2
    job_id = _expired_running_job(attempts)

    try:
        report = sweep(settings)
    finally:
        redis.Redis.from_url(url).flushdb()

    job = store.get_job(job_id)
    assert job.status == expect and job.attempts == attempts and job.lease_expires_at is None
    assert job.error["type"].endswith("/worker-lost")
    assert job_id in (report.requeued if expect == "queued" else report.failed), report
    if expect == "failed":
        assert "attempt budget (2 runs)" in job.error["detail"]


@pytest.mark.parametrize("by", ["worker retry", "graceful leave"])
def test_given_the_last_attempt_when_handed_back_expect_failed_not_queued(
    db_url: str, max_attempts: int, by: str
) -> None:
    """Whoever hands the job back, ``requeue_job`` counts the same budget."""
    job, _ = store.create_job("t1", SPEC)
    for _ in range(max_attempts):
        claimed = store.claim_job(job.id, task_id="task-1", worker="w1")
        assert claimed is not None
        after = store.requeue_job(job.id, {"type": "x", "title": by, "status": 503, "detail": by},
                                  token=claimed.fencing_token)
    assert after.status == "failed" and after.attempts == max_attempts and after.finished_at is not None
    assert after.error["detail"].startswith(by) and after.lease_expires_at is None


def test_given_a_queued_job_out_of_attempts_when_claimed_expect_failed_not_run(
    db_url: str, max_attempts: int
) -> None:
    """A budget lowered while a job waited: the claim refuses it and fails it with a reason."""
    job, _ = store.create_job("t1", SPEC)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job.id).values(attempts=max_attempts))
    assert store.claim_job(job.id, task_id="task-1", worker="w1") is None
    done = store.get_job(job.id)
    assert done.status == "failed" and done.attempts == max_attempts and done.fencing_token == 0
    assert "attempt budget" in done.error["detail"]
