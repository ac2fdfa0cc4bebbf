"""End to end: a real Celery worker delivers a job's signed webhook event to a real receiving
server in the test (``tests/webhook_receiver.py``), which verifies each signature with the
``standardwebhooks`` package and answers 500 once: the worker's task retries after its
backoff, and the job shows both attempts.

SQLite + local storage, one worker, its own Redis database (so other farms of the session
never take its messages). The operator allows 127.0.0.1, the only address any request goes to.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness import Farm, RedisServer, start_farm
from webhook_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

BACKOFF_S = 1.0


@pytest.fixture(scope="module")
def hook_farm(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    broker = redis_server.url.rsplit("/", 1)[0] + "/5"
    farm = start_farm(
        "sqlite-local",
        home=tmp_path_factory.mktemp("webhook-farm"),
        redis=redis_server,
        workers=1,
        extra_env={
            "STYLEFARM_BROKER_URL": broker,
            "STYLEFARM_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "STYLEFARM_WEBHOOK_BACKOFF_BASE_S": str(BACKOFF_S),
        },
    )
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture
def receiver(hook_farm: Farm) -> Iterator[Receiver]:
    secret = hook_farm.client.get("/v1/webhook-secret").json()["secret"]
    server = Receiver(secret=secret).start()
    yield server
    server.stop()


def wait_webhook(farm: Farm, job_id: str, state: str, timeout: float = 60) -> dict:
    return farm.wait(job_id, until=lambda j: (j["webhook"] or {}).get("state") == state, timeout=timeout)


def test_worker_delivers_signed_event_after_one_retry(hook_farm: Farm, receiver: Receiver, content_png: bytes) -> None:
    # given a receiver that answers 500 once, then 204
    receiver.answers = [500]
    content = hook_farm.upload(content_png)

    # when a job with a webhook runs to its end
    url = f"{receiver.url}/hooks?job=1"
    job = hook_farm.create({"method": "fast", "content": content, "size": 64, "style": 2, "webhook": url})
    assert job["webhook"]["state"] == "pending" and job["webhook"]["attempts"] == 0
    done = hook_farm.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]

    # expect the event delivered by the worker after one retry, both attempts on the job
    delivered = wait_webhook(hook_farm, job["id"], "delivered")
    webhook = delivered["webhook"]
    assert webhook["attempts"] == 2 and webhook["last_status"] == 204 and webhook["delivered_at"]
    assert webhook["next_attempt_at"] is None and webhook["url"] == url

    # expect the receiver to have verified both signatures, with one id, one body
    first, second = receiver.wait_for(2)
    time.sleep(BACKOFF_S)
    assert len(receiver.requests) == 2  # no third request once delivered
    assert (first.answered, second.answered) == (500, 204)
    assert first.error is None and second.error is None, (first.error, second.error)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"evt_{job['id']}_succeeded"
    assert first.body == second.body and first.path == "/hooks?job=1"
    gap = int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"])
    assert gap >= 0 and gap <= 30
    event = second.verified
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    assert event["data"]["links"]["result"].endswith(f"/v1/jobs/{job['id']}/result")
    assert event["data"] == {k: v for k, v in hook_farm.job(job["id"]).items() if k != "webhook"}


def test_worker_sends_canceled_event_of_a_running_job(
    hook_farm: Farm, receiver: Receiver, content_png: bytes, style_png: bytes
) -> None:
    # given a long optimize job with a webhook, canceled while it runs
    content, style = hook_farm.upload(content_png), hook_farm.upload(style_png)
    spec = {
        "method": "optimize",
        "content": content,
        "styles": [{"image": style}],
        "size": 64,
        "steps": 3000,
        "optimizer": "adam",
        "style_layers": ["relu1_1", "relu2_1"],
        "content_layers": ["relu2_1"],
    }
    job = hook_farm.create({**spec, "webhook": receiver.url})
    running = hook_farm.wait(
        job["id"],
        until=lambda j: j["progress"]["step"] >= 1 or j["status"] not in ("queued", "running"),
        timeout=180,
    )
    assert running["status"] == "running", running
    assert hook_farm.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202

    # expect the worker that stopped it to send one verified job.canceled event
    assert hook_farm.wait(job["id"], timeout=60)["status"] == "canceled"
    done = wait_webhook(hook_farm, job["id"], "delivered")
    assert done["webhook"]["attempts"] == 1 and done["webhook"]["last_status"] == 204
    (request,) = receiver.wait_for(1)
    assert request.error is None and request.verified["type"] == "job.canceled"
    assert request.headers["webhook-id"] == f"evt_{job['id']}_canceled"
    assert request.verified["data"]["status"] == "canceled" and request.verified["data"]["cancel_requested"] is True
