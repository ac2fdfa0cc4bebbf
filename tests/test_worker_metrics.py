"""The worker's metrics and job log fields (worker/metrics.py), recorded around the real task
run eagerly in this process; the scrape of real workers is tests/e2e/test_e2e_metrics.py."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import logs
from shared.metrics import problem_type_label
from worker import metrics as worker_metrics

MiB = 1 << 20


def sample(metric: Any, suffix: str, **labels: str) -> float:
    """The value of ``metric``'s sample ``<name><suffix>`` with exactly ``labels`` (0 when absent)."""
    return sum(
        s.value
        for family in metric.collect()
        for s in family.samples
        if s.name == family.name + suffix and s.labels == labels
    )


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """JSON lines of every log record, formatted when it is emitted (as in a worker)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter({"service": "worker"}))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_failed_run_is_timed_counted_by_problem_type_and_its_lines_carry_the_job(
    job_db: str, json_log: io.StringIO
) -> None:
    """Given a queued fast job whose content input does not exist, when the real task runs it,
    then its run is timed as failed, counted under its problem type, its log lines carry its
    id, tenant and method, and nothing stays bound after it."""
    from shared.jobs import store
    from worker.tasks import execute_job

    ins = worker_metrics.instruments()
    job, _ = store.create_job("acme", {"method": "fast", "content": "0" * 64})
    runs_before = sample(ins.duration, "_count", method="fast", outcome="failed")
    failures_before = sample(ins.failures, "_total", method="fast", problem_type="not-found")

    assert execute_job.apply(args=[job.id], task_id="task-1").get() == "failed"

    assert problem_type_label(store.get_job(job.id).error) == "not-found"
    assert sample(ins.duration, "_count", method="fast", outcome="failed") == runs_before + 1
    assert sample(ins.failures, "_total", method="fast", problem_type="not-found") == failures_before + 1
    assert sample(ins.peak_rss, "_sum", method="fast") > 10 * MiB
    assert sample(ins.jobs_running, "") == 0
    lines = [json.loads(x) for x in json_log.getvalue().splitlines()]
    claimed = [e for e in lines if "claimed by" in e["message"]]
    assert len(claimed) == 1
    assert (claimed[0]["job_id"], claimed[0]["tenant"], claimed[0]["method"]) == (job.id, "acme", "fast")
    assert logs.current_fields() == {}


def test_a_message_for_a_finished_job_is_not_a_run(job_db: str) -> None:
    """Given a job that already failed, when its message is delivered again, then the task
    skips it and no run is recorded."""
    from shared.jobs import store
    from worker.tasks import execute_job

    ins = worker_metrics.instruments()
    job, _ = store.create_job("acme", {"method": "fast", "content": "0" * 64})
    execute_job.apply(args=[job.id], task_id="task-1")
    runs = sample(ins.duration, "_count", method="fast", outcome="failed")

    assert execute_job.apply(args=[job.id], task_id="task-2").get() == "skipped"
    assert sample(ins.duration, "_count", method="fast", outcome="failed") == runs
    assert logs.current_fields() == {}


def test_the_peak_memory_of_a_job_starts_when_the_job_starts() -> None:
    """Given a process that once held 200 MiB more, when a job starts, then its high-water
    mark starts from what the process holds now (Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs: the high-water mark cannot be reset here")
    block = bytearray(200 * MiB)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    earlier_peak = worker_metrics.peak_rss_bytes()
    del block
    worker_metrics.reset_peak_memory()
    assert worker_metrics.peak_rss_bytes() < earlier_peak - 150 * MiB


@pytest.mark.parametrize(
    ("retval", "state", "outcome"),
    [
        ("succeeded", "SUCCESS", "succeeded"),
        ("failed", "SUCCESS", "failed"),
        ("canceled", "SUCCESS", "canceled"),
        ("skipped", "SUCCESS", None),
        (None, "RETRY", "retried"),
        (None, "FAILURE", "error"),
    ],
)
def test_outcome_of_a_task(retval: str | None, state: str, outcome: str | None) -> None:
    assert worker_metrics.run_outcome(retval, state) == outcome


def test_problem_type_label() -> None:
    assert problem_type_label({"type": "https://stylefarm.dev/problems/invalid-mask"}) == "invalid-mask"
    assert problem_type_label("https://stylefarm.dev/problems/storage-unavailable") == "storage-unavailable"
    assert problem_type_label(None) == problem_type_label({"type": "about:blank"}) == "unknown"
