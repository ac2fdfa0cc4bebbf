"""Prometheus metrics and structured logs on a real farm: the API's and every worker's
``/metrics`` after jobs ran, a killed pool process, and the JSON log lines of a job.

The farm (SQLite + local storage, two prefork workers, JSON logs) is this module's own; the
tests compare scrapes taken before and after their jobs, so each counts exactly its own jobs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.metrics import FARM_STATE_TTL_S
from shared.imaging import png_bytes

from harness import Farm, RedisServer, Samples, child_pids, metric_total, parse_metrics, start_farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

MiB = 1 << 20

@pytest.fixture(scope="module")
def metrics_farm(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    farm = start_farm("sqlite-local", home=tmp_path_factory.mktemp("metrics-farm"), redis=redis_server, workers=2,
                      extra_env={"STYLEFARM_LOG_FORMAT": "json"})
    try:
        yield farm
    finally:
        farm.close()


def scrape(url: str) -> Samples:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse_metrics(r.text)


total = metric_total


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def scrape_workers(farm: Farm) -> dict[str, Samples]:
    return {w.name: scrape(w.metrics_url) for w in farm.workers if w.metrics_url}


def summed(per_worker: dict[str, Samples]) -> Samples:
    out: Samples = {}
    for samples in per_worker.values():
        for key, value in samples.items():
            out[key] = out.get(key, 0.0) + value
    return out


def test_api_and_worker_metrics_count_exactly_the_jobs_that_ran(
    metrics_farm: Farm, content_png: bytes, style_png: bytes
) -> None:
    """Given a scrape of the API and of both workers, when one fast job succeeds and one fast
    job fails on an image the worker cannot decode, then every counter and histogram moved by
    exactly those two jobs and the requests the test made."""
    farm = metrics_farm
    assert len(farm.workers) == 2 and all(w.metrics_url for w in farm.workers)
    api_before = scrape(farm.api_url + "/metrics")
    first_answered = time.monotonic()
    per_worker_before = scrape_workers(farm)
    workers_before = summed(per_worker_before)

    # the damaged image is one of its own: inputs are shared by sha256 within a farm
    own = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    content, damaged = farm.upload(content_png), farm.upload(png_bytes(own))
    farm.corrupt_stored_input(damaged)
    ok = farm.create({"method": "fast", "content": content, "size": 64, "style": 2})
    bad = farm.create({"method": "fast", "content": damaged, "size": 64, "style": 2})
    polls_ok: list[dict] = []
    polls_bad: list[dict] = []
    done_ok = farm.wait(ok["id"], timeout=180, seen=polls_ok)
    done_bad = farm.wait(bad["id"], timeout=180, seen=polls_bad)
    assert done_ok["status"] == "succeeded", done_ok["error"]
    assert done_bad["status"] == "failed" and done_bad["error"]["type"].endswith("/invalid-image"), done_bad["error"]
    metrics = done_ok["result"]["metrics"]  # fast reads its input inside its clock; the worker says how long
    assert 0 < metrics["input_seconds"] < metrics["seconds"]

    # --- the API: jobs from SQL, queues from Redis, the requests of this test ---
    # past the cache of the first scrape: the API read its data before that scrape's answer came
    # back, so the cache has expired ``TTL`` after ``first_answered``
    time.sleep(max(0.0, first_answered + FARM_STATE_TTL_S - time.monotonic()))
    api = scrape(farm.api_url + "/metrics")
    assert api[("stylefarm_database_up", frozenset())] == 1 and api[("stylefarm_broker_up", frozenset())] == 1
    assert delta(api, api_before, "stylefarm_jobs", status="succeeded", method="fast") == 1
    assert delta(api, api_before, "stylefarm_jobs", status="failed", method="fast") == 1
    assert delta(api, api_before, "stylefarm_jobs") == 2  # no other status or method moved
    assert total(api, "stylefarm_jobs", status="queued") == total(api, "stylefarm_jobs", status="running") == 0
    assert total(api, "stylefarm_queue_depth", queue="gpu") == total(api, "stylefarm_queue_depth", queue="cpu") == 0
    assert total(api, "stylefarm_job_queued_age_seconds") == total(api, "stylefarm_job_heartbeat_age_seconds") == 0

    requests = "stylefarm_http_requests_total"
    assert delta(api, api_before, requests, method="POST", route="/v1/inputs") == 2
    assert delta(api, api_before, requests, method="POST", route="/v1/jobs", status="202") == 2
    polls = len(polls_ok) + len(polls_bad)
    assert delta(api, api_before, requests, method="GET", route="/v1/jobs/{job_id}", status="200") == polls
    assert delta(api, api_before, "stylefarm_http_request_duration_seconds_count", route="/v1/jobs/{job_id}") == polls
    assert delta(api, api_before, "stylefarm_http_problems_total") == 0  # every request of this test was good
    assert delta(api, api_before, requests, route="unmatched") == 0

    # --- the workers: summed over both, and each job on the worker that ran it ---
    per_worker = scrape_workers(farm)
    workers = summed(per_worker)
    count = "stylefarm_job_duration_seconds_count"
    assert delta(workers, workers_before, count, method="fast", outcome="succeeded") == 1
    assert delta(workers, workers_before, count, method="fast", outcome="failed") == 1
    assert delta(workers, workers_before, count) == 2
    failures = "stylefarm_job_failures_total"
    assert delta(workers, workers_before, failures, method="fast", problem_type="invalid-image") == 1
    assert delta(workers, workers_before, failures) == 1
    assert delta(workers, workers_before, "stylefarm_job_retries_total") == 0

    rows = farm.db_rows([ok["id"], bad["id"]])
    # the task's time covers the run its stored outcome reports
    ran_s = delta(workers, workers_before, "stylefarm_job_duration_seconds_sum", method="fast", outcome="succeeded")
    assert rows[ok["id"]]["result"]["seconds"] <= ran_s < 120
    for job, outcome in ((ok, "succeeded"), (bad, "failed")):
        row = rows[job["id"]]
        assert row["attempts"] == 1
        ran_on = row["worker"].split("@")[0]
        assert delta(per_worker[ran_on], per_worker_before[ran_on], count, outcome=outcome) == 1, ran_on
    # a row's revision counts its every write: the claim, each progress write, the final status
    # (a job that ends within one progress interval of its claim writes no progress: often 0 here)
    writes = sum(rows[j["id"]]["revision"] - 2 for j in (ok, bad))
    assert writes >= 0
    assert delta(workers, workers_before, "stylefarm_job_progress_writes_total", method="fast") == writes
    assert delta(workers, workers_before, "stylefarm_job_progress_writes_total") == writes
    assert delta(workers, workers_before, "stylefarm_job_peak_rss_bytes_count", method="fast") == 2
    # one input each; the damaged one is new to every worker, content_png may be in memory already
    assert delta(workers, workers_before, "stylefarm_worker_input_reads_total") == 2
    assert delta(workers, workers_before, "stylefarm_worker_input_reads_total", source="storage") >= 1
    rss = delta(workers, workers_before, "stylefarm_job_peak_rss_bytes_sum", method="fast") / 2
    assert 50 * MiB < rss < 64 * 1024 * MiB, f"peak RSS of a fast job: {rss / MiB:.0f} MiB"
    assert total(workers, "stylefarm_job_peak_cuda_allocated_bytes_count") == 0  # a CPU farm
    assert total(workers, "stylefarm_worker_jobs_running") == 0
    for name, samples in per_worker.items():
        assert total(samples, "stylefarm_worker_pool_processes") == 1, name


def test_a_killed_pool_process_keeps_its_counts_and_drops_its_live_gauge(
    metrics_farm: Farm, content_png: bytes
) -> None:
    """Given a worker whose pool process ran a job, when that process is SIGKILLed and the worker
    forks a new one, then the worker's counts stay and its live gauges count only the new one."""
    farm = metrics_farm
    job = farm.create({"method": "fast", "content": farm.upload(content_png), "size": 64, "style": 0})
    assert farm.wait(job["id"], timeout=180)["status"] == "succeeded"
    victim = next(w for w in farm.workers if farm.db_rows([job["id"]])[job["id"]]["worker"].startswith(w.name + "@"))
    before = scrape(victim.metrics_url)
    ran = total(before, "stylefarm_job_duration_seconds_count")
    assert ran >= 1

    (old_pid,) = child_pids(victim.pid)
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        pids = child_pids(victim.pid)
        after = scrape(victim.metrics_url)
        if pids and old_pid not in pids and total(after, "stylefarm_worker_pool_processes") == 1:
            break
        assert time.monotonic() < deadline, f"no new pool process reported: {pids}\n{farm.logs()}"
        time.sleep(0.5)
    assert victim.alive()
    assert total(after, "stylefarm_job_duration_seconds_count") == ran
    assert total(after, "stylefarm_job_progress_writes_total") == total(before, "stylefarm_job_progress_writes_total")


def json_lines(path: Path) -> list[dict]:
    """The log lines of ``path`` that are JSON objects (Celery's start-up banner is not)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_job_logs_json_lines_with_its_fields(metrics_farm: Farm, content_png: bytes) -> None:
    """Given a farm started with STYLEFARM_LOG_FORMAT=json, when a job runs, then the worker's
    lines about it and the API's line for its submission are JSON objects carrying its id, tenant,
    method and worker."""
    farm = metrics_farm
    job = farm.create({"method": "fast", "content": farm.upload(content_png), "size": 64, "style": 1})
    assert farm.wait(job["id"], timeout=180)["status"] == "succeeded"
    worker = farm.db_rows([job["id"]])[job["id"]]["worker"]
    logs = farm.home / "logs"

    lines = [e for w in farm.workers for e in json_lines(logs / f"{w.name}.log") if e.get("job_id") == job["id"]]
    claimed = [e for e in lines if "claimed by" in e["message"]]
    assert len(claimed) == 1, lines
    assert {k: claimed[0][k] for k in ("tenant", "method", "worker", "service", "level")} == {
        "tenant": "default", "method": "fast", "worker": worker, "service": "worker", "level": "INFO"
    }
    assert any("succeeded in" in e["message"] for e in lines)
    assert all(e["method"] == "fast" and e["tenant"] == "default" for e in lines)

    submitted = [
        e for e in json_lines(logs / "api.log") if e.get("route") == "/v1/jobs" and e.get("job_id") == job["id"]
    ]
    assert len(submitted) == 1, submitted
    assert submitted[0]["status"] == 202 and submitted[0]["tenant"] == "default" and submitted[0]["service"] == "api"
    assert submitted[0]["logger"] == "stylefarm.api.access" and submitted[0]["duration_ms"] > 0
