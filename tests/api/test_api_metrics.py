"""GET /metrics of the API: requests by route template, status and problem type, jobs by
status and method from SQL (cached), queue depth from a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.jobs import store
from shared.settings import Settings

from api_helpers import MAX_UPLOAD, make_client, upload_id
from harness import RedisServer, Samples, metric_total, parse_metrics


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return parse_metrics(r.text)


value = metric_total


def submit_fast(client: TestClient, content: str) -> str:
    r = client.post("/v1/jobs", json={"method": "fast", "content": content, "style": 1})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_requests_are_counted_by_route_template_status_and_problem_type(client: TestClient) -> None:
    """Given requests to one route with different ids, an OPTIONS the middleware answers and a
    body over the limit, then each is counted under its route's template, never its raw path."""
    ids = [uuid.uuid4().hex for _ in range(3)]
    for job_id in ids:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/healthz").status_code == 200
    assert client.options(f"/v1/jobs/{ids[0]}/cancel").status_code == 204
    too_big = client.post("/v1/jobs", content=b"x" * (300 * 1024), headers={"content-type": "application/json"})
    assert too_big.status_code == 413
    assert client.get("/no/such/page").status_code == 404

    m = scrape(client)
    requests = "stylefarm_http_requests_total"
    assert m[(requests, frozenset({("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")}))] == 3
    assert value(m, requests, method="GET", route="/healthz", status="200") == 1
    assert value(m, requests, method="OPTIONS", route="/v1/jobs/{job_id}/cancel", status="204") == 1
    assert value(m, requests, method="POST", route="/v1/jobs", status="413") == 1
    assert value(m, requests, route="unmatched", status="404") == 1
    assert value(m, "stylefarm_http_request_duration_seconds_count", route="/v1/jobs/{job_id}") == 3
    assert value(m, "stylefarm_http_request_duration_seconds_sum", route="/v1/jobs/{job_id}") > 0
    problems = "stylefarm_http_problems_total"
    assert value(m, problems, route="/v1/jobs/{job_id}", problem_type="not-found") == 3
    assert value(m, problems, route="/v1/jobs", problem_type="payload-too-large") == 1
    assert value(m, problems) == 5  # the 404s, the 413 and the unknown page; the 200 and 204 are no problems
    assert not any(job_id in str(key) for key in m for job_id in ids)


def test_jobs_are_counted_by_status_and_method_from_sql_and_cached(client: TestClient) -> None:
    """Given queued and running jobs, then the gauges show them once the cache of the previous
    scrape has expired, and not before."""
    farm_state = client.app.state.metrics.farm
    content = upload_id(client)
    running = submit_fast(client, content)
    submit_fast(client, content)
    store.claim_job(running, task_id="t1", worker="w1@test")

    farm_state.ttl_s = 3600
    m = scrape(client)
    assert value(m, "stylefarm_database_up") == 1
    assert value(m, "stylefarm_jobs", status="queued", method="fast") == 1
    assert value(m, "stylefarm_jobs", status="running", method="fast") == 1
    assert value(m, "stylefarm_jobs") == 2
    assert value(m, "stylefarm_jobs", status="succeeded", method="optimize") == 0  # every pair has a series
    assert 0 < value(m, "stylefarm_job_queued_age_seconds", queue="gpu") < 60
    assert value(m, "stylefarm_job_queued_age_seconds", queue="cpu") == 0
    assert 0 < value(m, "stylefarm_job_heartbeat_age_seconds") < 60

    submit_fast(client, content)
    assert value(scrape(client), "stylefarm_jobs", status="queued") == 1  # the cached read
    farm_state.ttl_s = 0
    assert value(scrape(client), "stylefarm_jobs", status="queued") == 2


def test_an_unreachable_broker_reports_down_and_no_depths(client: TestClient) -> None:
    m = scrape(client)  # the fixture's broker URL has nothing listening
    assert value(m, "stylefarm_broker_up") == 0
    assert not any(name == "stylefarm_queue_depth" for name, _ in m)


@pytest.fixture
def redis_client(tmp_path: Path, redis_server: RedisServer) -> Iterator[TestClient]:
    """The API with a real Redis (a database of its own: no worker consumes it)."""
    import redis

    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    settings = Settings(home=tmp_path, broker_url=url, max_upload_bytes=MAX_UPLOAD)
    try:
        yield from make_client(settings)
    finally:
        redis.Redis.from_url(url).flushdb()


def test_queue_depth_is_read_from_the_broker(redis_client: TestClient) -> None:
    """Given three jobs sent to the gpu queue of a Redis no worker reads, then the depth is 3."""
    content = upload_id(redis_client)
    for _ in range(3):
        submit_fast(redis_client, content)
    m = scrape(redis_client)
    assert value(m, "stylefarm_broker_up") == 1
    assert value(m, "stylefarm_queue_depth", queue="gpu") == 3
    assert value(m, "stylefarm_queue_depth", queue="cpu") == 0
