"""worker.job_runtime: progress writes are throttled from the claim on, so a job that ends
within one ``progress_interval_s`` of its claim writes no progress at all, and a longer one
writes at most one per interval and always its last step."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.engine.context import Progress
from shared.jobs import store
from shared.settings import Settings
from shared.storage import LocalStorage
from worker.job_runtime import JobRuntime

SPEC = {"method": "fast", "content": "a" * 64}
INTERVAL_S = 0.5


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    now = {"t": 1000.0}
    monkeypatch.setattr("worker.job_runtime.time.monotonic", lambda: now["t"])
    return now


def claimed(tmp_path: Path) -> tuple[str, JobRuntime]:
    job, _ = store.create_job("t1", SPEC)
    token = store.claim_job(job.id, task_id="t", worker="w").fencing_token
    settings = Settings(home=tmp_path / "home", progress_interval_s=INTERVAL_S)
    return job.id, JobRuntime(job_id=job.id, tenant="t1", settings=settings, storage=LocalStorage(tmp_path / "b"),
                              token=token)


def revision(job_id: str) -> int:
    value = store.job_revision(job_id)
    assert value is not None
    return value


def test_given_a_job_that_ends_within_one_interval_expect_no_progress_written(
    db_url: str, tmp_path: Path, clock: dict[str, float]
) -> None:
    # given a claimed job (the claim wrote the row)
    job_id, rt = claimed(tmp_path)
    at_claim = revision(job_id)
    # when it reports all three steps, the last 0.4 s after the claim
    for step in (1, 2, 3):
        clock["t"] += 0.4 / 3
        rt.progress(Progress(step=step, total=3, stage="render"))
    # expect the row untouched: the final status will say it all
    assert revision(job_id) == at_claim
    assert rt.is_canceled() is False and rt.last_cancel_check == 1000.0  # no cancel read either


def test_given_a_longer_job_expect_one_write_per_interval_and_its_last_step(
    db_url: str, tmp_path: Path, clock: dict[str, float]
) -> None:
    # given a claimed job
    job_id, rt = claimed(tmp_path)
    at_claim = revision(job_id)
    # when it reports ten steps, 0.2 s apart (2 s in all)
    for step in range(1, 11):
        clock["t"] += 0.2
        rt.progress(Progress(step=step, total=10, stage="render"))
    # expect writes at 0.6, 1.2, 1.8 s (the first interval after the claim, then one per interval)
    # and the last step at 2.0 s, which is in the row
    assert revision(job_id) - at_claim == 4
    job = store.get_job(job_id)
    assert job is not None and job.step == 10 and job.total == 10


def test_given_a_job_past_one_interval_at_its_last_step_expect_that_step_written(
    db_url: str, tmp_path: Path, clock: dict[str, float]
) -> None:
    # given a claimed job whose only report is its last step, 0.7 s after the claim
    job_id, rt = claimed(tmp_path)
    at_claim = revision(job_id)
    clock["t"] += 0.7
    rt.progress(Progress(step=1, total=1, stage="render"))
    # expect it written (a client may have watched it run for a while)
    assert revision(job_id) - at_claim == 1
