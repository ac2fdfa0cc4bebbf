"""Priorities and queues through the API, a queued job's place in line, and the fleet
endpoints (GET /v1/workers, GET /v1/queues) against a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from shared.broker import fleet
from shared.broker.celery_config import priority_list_name
from shared.db.orm import Job
from shared.db.session import session_scope
from shared.jobs import queue_stats, store
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings

from api_helpers import EnqueueRecorder, assert_problem, make_client, upload_id
from harness import RedisServer

#: Redis database of these tests: the session's farms consume database 0.
FLEET_DB = 13
HEARTBEAT_TTL_S = 30.0


def fast_spec(client: TestClient, headers: dict[str, str] | None = None) -> dict:
    return {"method": "fast", "content": upload_id(client, headers=headers or {})}


def submit(client: TestClient, spec: dict, headers: dict[str, str] | None = None, **params: object):
    return client.post("/v1/jobs", json=spec, params=params, headers=headers or {})


@pytest.fixture
def broker_url(redis_server: RedisServer) -> Iterator[str]:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{FLEET_DB}"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def fresh_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read sees the registry as it is now (no per-process cache between steps)."""
    monkeypatch.setattr(fleet, "fleet_cache", fleet.FleetCache(max_age_s=0))
    queue_stats.forget_means()


@pytest.fixture
def fleet_client(
    settings: Settings, broker_url: str, enqueued: EnqueueRecorder, fresh_fleet: None
) -> Iterator[TestClient]:
    yield from make_client(settings.model_copy(update={"broker_url": broker_url}))


def publish_worker(broker_url: str, name: str, queues: list[str], job_id: str | None = None,
                   ttl: float = HEARTBEAT_TTL_S) -> None:  # fmt: skip
    """A worker's record, written by the same functions the worker's heartbeat uses."""
    client = fleet.client_for(broker_url)
    assert client is not None
    fleet.heartbeat(client, name, {"host": "gpu-node-1", "pid": 4242, "queues": queues, "state": "ready",
                                   "started_at": time.time()}, ttl)  # fmt: skip
    device = {"device": "cuda", "device_name": "NVIDIA H200", "memory_bytes": 150_000_000_000}
    fleet.set_fields(client, name, device, ttl)
    if job_id is not None:
        fleet.set_current_job(client, name, 4243, job_id, ttl)


def finish_with_duration(job_id: str, seconds: float) -> None:
    """Run a job through the store, then set how long its run took."""
    job = store.claim_job(job_id, task_id=f"t-{job_id}", worker="w")
    assert job is not None
    outcome = RenderOutcome(keys=RenderKeys(image="x.png"), width=1, height=1, size_bytes=1)
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=job.fencing_token)
    with session_scope() as session:
        finished = store.get_job(job_id).finished_at
        assert finished is not None
        session.execute(update(Job).where(Job.id == job_id).values(started_at=finished - timedelta(seconds=seconds)))


# --- priority and queue on POST /v1/jobs ------------------------------------------------


def test_given_priority_and_queue_when_submitted_expect_them_stored_and_sent(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    # given a job submitted with a priority and a queue override, and one with neither
    urgent = submit(client, fast_spec(client), priority=7, queue="cpu")
    normal = submit(client, fast_spec(client))
    # expect both on the row and in the message; the default queue is the method's (registry)
    assert urgent.status_code == 202, urgent.text
    assert (urgent.json()["priority"], urgent.json()["queue"]) == (7, "cpu")
    assert (normal.json()["priority"], normal.json()["queue"]) == (0, "gpu")
    assert [(c["queue"], c["priority"]) for c in enqueued.calls] == [("cpu", 7), ("gpu", 0)]
    assert "priority" not in urgent.json()["spec"]  # a field of the request, not of the spec


@pytest.mark.parametrize("params", [{"priority": 10}, {"priority": -1}, {"priority": "high"}, {"queue": "tpu"}])
def test_given_bad_priority_or_queue_expect_422_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder, params: dict
) -> None:
    spec = fast_spec(client)
    body = assert_problem(submit(client, spec, **params), 422, "validation-error")
    assert next(iter(params)) in body["detail"]
    assert enqueued.calls == [] and client.get("/v1/jobs").json()["items"] == []


def test_given_idempotency_key_reused_with_other_priority_expect_422(client: TestClient) -> None:
    spec, key = fast_spec(client), {"Idempotency-Key": "k-1"}
    first = submit(client, spec, headers=key, priority=3)
    assert first.status_code == 202
    assert submit(client, spec, headers=key, priority=3).json()["id"] == first.json()["id"]  # replay: 200
    assert_problem(submit(client, spec, headers=key, priority=4), 422, "idempotency-key-reused")
    # the method's own queue named explicitly is the same request as no queue
    plain = submit(client, spec, headers={"Idempotency-Key": "k-2"})
    assert submit(client, spec, headers={"Idempotency-Key": "k-2"}, queue="gpu").json()["id"] == plain.json()["id"]


# --- position -----------------------------------------------------------------------------


def test_given_queued_jobs_expect_position_by_priority_then_age(client: TestClient) -> None:
    # given, in this order: a, b (normal), c (urgent), d (normal, on the cpu queue)
    spec = fast_spec(client)
    a, b = (submit(client, spec).json()["id"] for _ in range(2))
    c = submit(client, spec, priority=5).json()["id"]
    d = submit(client, spec, queue="cpu").json()["id"]

    def position(job_id: str) -> int | None:
        return client.get(f"/v1/jobs/{job_id}").json()["position"]

    # expect: c first (higher priority), then a, then b; d alone on its queue
    assert [position(j) for j in (c, a, b, d)] == [0, 1, 2, 0]
    # when c is canceled and a starts running
    client.post(f"/v1/jobs/{c}/cancel")
    store.claim_job(a, task_id="t-a", worker="w")
    # expect b first in line; jobs no longer queued have no position
    assert [position(j) for j in (b, a, c)] == [0, None, None]
    assert client.get("/v1/jobs").json()["items"][0]["position"] is None  # only GET /v1/jobs/{id} computes it


def test_given_live_workers_and_history_expect_estimated_start(fleet_client: TestClient, broker_url: str) -> None:
    client = fleet_client
    spec = fast_spec(client)
    # given fast jobs that recently ran 10, 20 and 30 s (mean 20 s)
    for seconds in (10, 20, 30):
        finish_with_duration(submit(client, spec).json()["id"], seconds)
    # and four queued fast jobs
    queued = [submit(client, spec).json()["id"] for _ in range(4)]

    def estimates() -> list[float | None]:
        return [client.get(f"/v1/jobs/{j}").json()["estimated_start_s"] for j in queued]

    # when no worker consumes the queue: unknown
    assert estimates() == [None] * 4
    # when two workers consume gpu, one busy and one idle
    publish_worker(broker_url, "w1@a", ["gpu", "cpu"], job_id="some-running-job")
    publish_worker(broker_url, "w2@b", ["gpu"])
    # expect: the first starts now on the idle worker; then one mean duration per round of two
    assert [client.get(f"/v1/jobs/{j}").json()["position"] for j in queued] == [0, 1, 2, 3]
    assert estimates() == [0.0, 20.0, 20.0, 40.0]
    # a method without history: the job that must wait has no estimate
    other = submit(client, {"method": "optimize", "content": spec["content"], "styles": [{"image": spec["content"]}]})
    assert other.status_code == 202, other.text
    assert client.get(f"/v1/jobs/{other.json()['id']}").json()["estimated_start_s"] is None


# --- GET /v1/workers ------------------------------------------------------------------------


@pytest.fixture
def keyed_fleet_client(
    settings: Settings, broker_url: str, enqueued: EnqueueRecorder, fresh_fleet: None
) -> Iterator[TestClient]:
    keyed = settings.model_copy(update={"broker_url": broker_url, "api_keys": "key-a=acme,key-b=globex"})
    yield from make_client(keyed)


def test_given_workers_expect_fleet_listing_with_current_job_only_for_its_owner(
    keyed_fleet_client: TestClient, broker_url: str
) -> None:
    client, a, b = keyed_fleet_client, {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    # given acme's job running on w1, and an idle w2
    job_id = submit(client, fast_spec(client, a), headers=a).json()["id"]
    publish_worker(broker_url, "w1@gpu-node-1", ["gpu"], job_id=job_id)
    publish_worker(broker_url, "w2@gpu-node-2", ["gpu", "cpu"])
    # when each tenant lists the fleet
    seen_a = {w["id"]: w for w in client.get("/v1/workers", headers=a).json()["items"]}
    seen_b = {w["id"]: w for w in client.get("/v1/workers", headers=b).json()["items"]}
    # expect both workers for both, described
    assert sorted(seen_a) == sorted(seen_b) == ["w1@gpu-node-1", "w2@gpu-node-2"]
    w1 = seen_a["w1@gpu-node-1"]
    described = (w1["host"], w1["pid"], w1["device"], w1["device_name"], w1["memory_bytes"])
    assert described == ("gpu-node-1", 4242, "cuda", "NVIDIA H200", 150_000_000_000)
    assert w1["queues"] == ["gpu"] and w1["state"] == "ready" and w1["last_heartbeat_at"] and w1["started_at"]
    # the job id only for its owner; the other tenant sees only that w1 is busy
    assert w1["busy"] and w1["current_job"]["id"] == job_id and w1["current_job"]["link"] == f"/v1/jobs/{job_id}"
    assert seen_b["w1@gpu-node-1"]["busy"] and seen_b["w1@gpu-node-1"]["current_job"] is None
    assert not seen_a["w2@gpu-node-2"]["busy"] and seen_a["w2@gpu-node-2"]["current_job"] is None
    assert_problem(client.get("/v1/workers"), 401)
    assert_problem(client.get("/v1/queues"), 401)


def test_given_worker_stops_heartbeating_expect_it_leaves_the_list(fleet_client: TestClient, broker_url: str) -> None:
    # given a worker whose record lives 0.5 s past its heartbeat, and one that stays
    publish_worker(broker_url, "short@x", ["gpu"], ttl=0.5)
    publish_worker(broker_url, "long@y", ["gpu"])
    assert [w["id"] for w in fleet_client.get("/v1/workers").json()["items"]] == ["long@y", "short@x"]
    # when it misses its heartbeats
    time.sleep(0.8)
    # expect it gone, and its index entry pruned
    assert [w["id"] for w in fleet_client.get("/v1/workers").json()["items"]] == ["long@y"]
    assert redis.Redis.from_url(broker_url).zrange(fleet.INDEX_KEY, 0, -1) == [b"long@y"]
    # a worker that leaves cleanly is gone at once
    fleet.unregister(fleet.client_for(broker_url), "long@y")
    assert fleet_client.get("/v1/workers").json()["items"] == []


def test_given_broker_down_expect_workers_503_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/workers"), 503, "broker-unavailable")


# --- GET /v1/queues ---------------------------------------------------------------------------


def test_given_jobs_in_broker_and_sql_expect_queue_depths(
    settings: Settings, broker_url: str, fresh_fleet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the real broker client (no recorder): messages land in Redis database FLEET_DB,
    # which no worker consumes
    for client in make_client(settings.model_copy(update={"broker_url": broker_url})):
        spec = fast_spec(client)
        for priority in (0, 0, 9, 4):
            assert submit(client, spec, priority=priority).status_code == 202
        running = submit(client, spec, queue="cpu").json()["id"]
        store.claim_job(running, task_id="t", worker="w")
        publish_worker(broker_url, "w1@a", ["gpu", "cpu"], job_id=running)
        publish_worker(broker_url, "w2@b", ["gpu"])
        # when the queues are read
        queues = {q["name"]: q for q in client.get("/v1/queues").json()["items"]}
    # expect the broker's messages per priority list, SQL's counts and the live workers
    gpu, cpu = queues["gpu"], queues["cpu"]
    assert (gpu["waiting"], gpu["queued"], gpu["running"], gpu["workers"], gpu["idle_workers"]) == (4, 4, 0, 2, 1)
    by_priority = {p["priority"]: (p["list"], p["waiting"]) for p in gpu["waiting_by_priority"]}
    assert by_priority[9] == ("gpu", 1) and by_priority[4] == (priority_list_name("gpu", 4), 1)
    assert by_priority[0] == ("gpu:9", 2) and sum(w for _, w in by_priority.values()) == 4
    assert [p["priority"] for p in gpu["waiting_by_priority"]] == list(range(9, -1, -1))
    # the cpu job's message was taken by no one, yet its row is running (claimed above)
    assert (cpu["waiting"], cpu["queued"], cpu["running"], cpu["workers"], cpu["idle_workers"]) == (1, 0, 1, 1, 0)


def test_given_broker_down_expect_queues_from_sql_and_null_broker_figures(client: TestClient) -> None:
    submit(client, fast_spec(client))
    queues = {q["name"]: q for q in client.get("/v1/queues").json()["items"]}
    assert queues["gpu"]["queued"] == 1
    assert queues["gpu"]["waiting"] is None and queues["gpu"]["waiting_by_priority"] is None
    assert queues["gpu"]["workers"] is None


def test_openapi_documents_fleet_endpoints_and_submit_parameters(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/workers", "/v1/queues"):
        responses = paths[path]["get"]["responses"]
        assert {"200", "401", "503"} <= set(responses)
        assert "application/problem+json" in responses["503"]["content"]
    params = {p["name"]: p for p in paths["/v1/jobs"]["post"]["parameters"]}
    assert params["priority"]["schema"]["maximum"] == 9 and params["priority"]["schema"]["minimum"] == 0
    assert set(params["queue"]["schema"]["anyOf"][0]["enum"]) == {"gpu", "cpu"}
