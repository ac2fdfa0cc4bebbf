"""Signed webhooks at the API: a job's ``webhook`` URL, its checks at submit, the tenant's
secret, and delivery attempts to a real receiving server (``tests/webhook_receiver.py``)
that verifies each signature with the ``standardwebhooks`` package.

The test plays the worker: it finishes the job with ``shared.jobs.store`` and makes the
delivery attempts with ``shared.webhooks.delivery.deliver``, which is all the Celery task
``stylefarm.deliver_webhook`` does (the real task runs in tests/e2e/test_e2e_webhooks.py).
Every request goes to 127.0.0.1; the refused URLs are only resolved, never contacted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook, WebhookVerificationError

import shared.webhooks.dispatch
from shared.db.orm import utcnow
from shared.errors import WebhookDestinationRefused
from shared.jobs import store
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings
from shared.webhooks import transport
from shared.webhooks.delivery import deliver
from shared.webhooks.destinations import check_destination

from api_helpers import EnqueueRecorder, assert_problem, make_client, upload_id
from webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(60)


@dataclass
class DeliveryRecorder:
    """Stands in for ``shared.webhooks.dispatch.send_delivery`` (no broker in these tests)."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, job_id: str, msg_id: str, **kwargs: Any) -> None:
        self.calls.append((job_id, msg_id))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> DeliveryRecorder:
    recorder = DeliveryRecorder()
    monkeypatch.setattr(shared.webhooks.dispatch, "send_delivery", recorder)
    return recorder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The operator allows 127.0.0.1 (the receiver), and retries come quickly."""
    return Settings(
        home=tmp_path,
        broker_url="redis://127.0.0.1:1/0",
        webhook_allow_hosts="127.0.0.1",
        webhook_backoff_base_s=0.5,
        webhook_max_attempts=3,
    )


@pytest.fixture
def client(settings: Settings, enqueued: EnqueueRecorder, sent: DeliveryRecorder) -> Iterator[TestClient]:
    yield from make_client(settings)


@pytest.fixture
def receiver(client: TestClient) -> Iterator[Receiver]:
    """A receiver that knows the tenant's secret, as the tenant's own server would."""
    server = Receiver(secret=client.get("/v1/webhook-secret").json()["secret"]).start()
    yield server
    server.stop()


def submit(client: TestClient, webhook: Any, **headers: str) -> Any:
    return client.post(
        "/v1/jobs", json={"method": "fast", "content": upload_id(client), "webhook": webhook}, headers=headers
    )


def finish(job_id: str) -> None:
    """The worker's part: claim the job and store a render outcome."""
    claimed = store.claim_job(job_id, task_id="t", worker="w")
    assert claimed is not None
    key = f"tenants/default/jobs/{job_id}/output.png"
    outcome = RenderOutcome(keys=RenderKeys(image=key), width=8, height=6, size_bytes=100)
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=claimed.fencing_token)


def test_given_receiver_failing_once_expect_event_delivered_after_one_retry(
    client: TestClient, settings: Settings, receiver: Receiver, sent: DeliveryRecorder
) -> None:
    # given a job with a webhook whose receiver answers 500 once, then 204
    receiver.answers = [500]
    job = submit(client, f"{receiver.url}/hooks/stylefarm?src=test").json()
    assert job["webhook"] == {
        "url": f"{receiver.url}/hooks/stylefarm?src=test",
        "state": "pending",
        "attempts": 0,
        "last_status": None,
        "last_error": None,
        "delivered_at": None,
        "next_attempt_at": None,
    }

    # when the worker finishes it, expect the delivery task sent once with the event's id
    finish(job["id"])
    shared.webhooks.dispatch.notify_final(store.get_job(job["id"]), settings)
    assert sent.calls == [(job["id"], f"evt_{job['id']}_succeeded")]
    msg_id = sent.calls[0][1]

    # when it makes its first attempt, expect a 500 and a retry due after the backoff
    began = utcnow()
    first = deliver(job["id"], msg_id, settings)
    ended = utcnow()
    assert first is not None and first.number == 1 and first.record.status == 500
    due = first.record.next_attempt_at  # the backoff after the failed answer (not read off the clock later)
    assert due is not None and first.retry_in_s is not None and first.retry_in_s <= settings.webhook_backoff_base_s
    assert (due - began).total_seconds() >= settings.webhook_backoff_base_s >= (due - ended).total_seconds()
    pending = client.get(f"/v1/jobs/{job['id']}").json()["webhook"]
    assert pending["state"] == "pending" and pending["attempts"] == 1 and pending["last_status"] == 500
    assert pending["last_error"] == "HTTP 500" and pending["next_attempt_at"] is not None
    if utcnow() < due:  # (a stalled machine may have passed the backoff already)
        assert deliver(job["id"], msg_id, settings) is None  # not due yet: an early message does nothing

    # when the retry comes after the backoff, expect it delivered
    time.sleep(first.retry_in_s)
    second = deliver(job["id"], msg_id, settings)
    assert second is not None and second.number == 2 and second.retry_in_s is None
    view = client.get(f"/v1/jobs/{job['id']}").json()
    webhook = view["webhook"]
    assert webhook["state"] == "delivered" and webhook["attempts"] == 2 and webhook["last_status"] == 204
    assert webhook["delivered_at"] is not None and webhook["next_attempt_at"] is None
    assert deliver(job["id"], msg_id, settings) is None  # delivered: nothing more

    # expect the receiver verified both signatures, saw the same id and body twice
    one, two = receiver.wait_for(2)
    assert len(receiver.requests) == 2
    assert one.error is None and two.error is None, (one.error, two.error)
    assert one.path == two.path == "/hooks/stylefarm?src=test"
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == msg_id
    assert one.body == two.body and one.headers["content-type"] == "application/json"
    event = two.verified
    assert event["type"] == "job.succeeded" and event["timestamp"].endswith("Z")
    assert event["data"] == {k: v for k, v in view.items() if k != "webhook"}  # the job as GET shows it
    assert event["data"]["links"]["result"] == f"/v1/jobs/{job['id']}/result"
    assert event["data"]["result"] == {"width": 8, "height": 6, "metrics": {}, "videos": None}


def test_given_rotated_secret_expect_next_attempt_signed_with_the_new_one(
    client: TestClient, settings: Settings, receiver: Receiver
) -> None:
    # given a finished job whose first attempt was signed with the old secret
    receiver.answers = [503]
    job_id = submit(client, receiver.url).json()["id"]
    finish(job_id)
    msg_id = f"evt_{job_id}_succeeded"
    first = deliver(job_id, msg_id, settings)
    assert first is not None and first.record.status == 503 and first.retry_in_s is not None

    # when the tenant rotates its secret before the retry
    old = receiver.secret
    rotated = client.post("/v1/webhook-secret/rotate")
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    receiver.secret = rotated.json()["secret"]
    assert receiver.secret != old and receiver.secret.startswith("whsec_")
    time.sleep(first.retry_in_s)

    # expect the retry to verify with the new secret only
    second = deliver(job_id, msg_id, settings)
    assert second is not None and second.record.status == 204
    assert receiver.requests[-1].error is None
    last = receiver.requests[-1]
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(last.body, last.headers)


def test_given_redirecting_receiver_expect_redirect_not_followed_and_retried(
    client: TestClient, settings: Settings, receiver: Receiver
) -> None:
    job_id = submit(client, f"{receiver.url}/redirect").json()["id"]
    finish(job_id)

    attempt = deliver(job_id, f"evt_{job_id}_succeeded", settings)

    assert attempt is not None and attempt.record.status == 302 and attempt.retry_in_s is not None
    assert [r.path for r in receiver.requests] == ["/redirect"]  # /elsewhere never asked for
    webhook = client.get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert webhook["state"] == "pending" and webhook["last_status"] == 302
    assert "redirect" in webhook["last_error"] and "/elsewhere" in webhook["last_error"]


def test_given_receiver_always_failing_expect_failed_after_max_attempts(
    client: TestClient, settings: Settings, receiver: Receiver
) -> None:
    receiver.default = 500
    job_id = submit(client, receiver.url).json()["id"]
    finish(job_id)
    msg_id = f"evt_{job_id}_succeeded"

    backoffs: list[tuple[float, float] | None] = []  # each attempt's next one, seconds after its start / end
    for _ in range(settings.webhook_max_attempts):
        began = utcnow()
        attempt = deliver(job_id, msg_id, settings)
        ended = utcnow()
        assert attempt is not None
        due = attempt.record.next_attempt_at
        backoffs.append(None if due is None else ((due - began).total_seconds(), (due - ended).total_seconds()))
        time.sleep(attempt.retry_in_s or 0)

    # expect the backoff to double (0.5 s, then 1 s after the failed answer: between the attempt's
    # start and end plus the backoff, whatever the machine's stalls), then no retry after the last
    assert backoffs[0] is not None and backoffs[1] is not None and backoffs[2] is None
    assert backoffs[0][0] >= 0.5 >= backoffs[0][1] and backoffs[1][0] >= 1.0 >= backoffs[1][1], backoffs
    webhook = client.get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert webhook["state"] == "failed" and webhook["attempts"] == 3 and webhook["next_attempt_at"] is None
    assert "gave up after 3 attempts" in webhook["last_error"]
    assert len(receiver.requests) == 3 and deliver(job_id, msg_id, settings) is None


def test_given_slow_receiver_expect_attempt_cut_at_total_timeout(
    client: TestClient, settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "TOTAL_TIMEOUT_S", 0.5)
    receiver.slow_s = 3.0
    job_id = submit(client, f"{receiver.url}/slow").json()["id"]
    finish(job_id)

    t0 = time.monotonic()
    attempt = deliver(job_id, f"evt_{job_id}_succeeded", settings)

    assert time.monotonic() - t0 < 2.0
    assert attempt is not None and attempt.record.status is None and attempt.retry_in_s is not None
    assert "no response" in (attempt.record.error or "")


def test_given_destination_refused_at_delivery_expect_failed_without_a_request(
    client: TestClient, settings: Settings, receiver: Receiver
) -> None:
    # given a job accepted while the operator allowed 127.0.0.1
    job_id = submit(client, receiver.url).json()["id"]
    finish(job_id)

    # when the allowance is gone at delivery time (as when DNS now points inside)
    attempt = deliver(job_id, f"evt_{job_id}_succeeded", settings.model_copy(update={"webhook_allow_hosts": ""}))

    # expect no request and the event failed for good, saying why
    assert receiver.requests == []
    assert attempt is not None and attempt.retry_in_s is None
    webhook = client.get(f"/v1/jobs/{job_id}").json()["webhook"]
    assert webhook["state"] == "failed" and webhook["attempts"] == 1 and "loopback" in webhook["last_error"]


def test_given_canceled_queued_job_expect_its_event_sent_once(client: TestClient, sent: DeliveryRecorder) -> None:
    job_id = submit(client, "http://127.0.0.1:9/hook").json()["id"]

    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
    assert sent.calls == [(job_id, f"evt_{job_id}_canceled")]
    client.post(f"/v1/jobs/{job_id}/cancel")  # canceling again is a no-op
    assert len(sent.calls) == 1


def test_given_job_without_webhook_expect_null_and_no_event(client: TestClient, sent: DeliveryRecorder) -> None:
    job = client.post("/v1/jobs", json={"method": "fast", "content": upload_id(client)}).json()
    assert job["webhook"] is None
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert sent.calls == []


REFUSED = [
    ("http://10.0.0.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("http://[::1]:8080/", "loopback"),
    ("http://127.0.0.2/", "loopback"),
    ("http://0.0.0.0:80/", "unspecified"),
    ("http://[::ffff:10.1.2.3]/", "private"),
    ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),  # NAT64 of 169.254.169.254
    ("http://224.0.0.1/", "multicast"),
    ("http://100.64.0.1/", "non-public"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("https://169.254.10.10/", "link-local"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_given_internal_destination_expect_422_at_submit_and_no_job(
    client: TestClient, enqueued: EnqueueRecorder, url: str, reason: str
) -> None:
    body = assert_problem(submit(client, url), 422, "webhook-destination-refused")
    assert body["reason"] == reason and "STYLEFARM_WEBHOOK_ALLOW_HOSTS" in body["detail"]
    assert enqueued.calls == [] and client.get("/v1/jobs").json()["items"] == []


def test_given_localhost_not_allowed_expect_422(tmp_path: Path, enqueued: EnqueueRecorder) -> None:
    for client in make_client(Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0")):
        body = assert_problem(submit(client, "http://localhost:8000/hook"), 422, "webhook-destination-refused")
        assert "localhost resolves to" in body["detail"] and body["reason"] == "loopback"
        # the default settings do not allow 127.0.0.1 either
        assert_problem(submit(client, "http://127.0.0.1:8000/hook"), 422, "webhook-destination-refused")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "/relative/hook",
        "http:///nohost",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1/a b",
        42,
        "http://" + "a" * 2100 + ".com/",
        "http://[::1/",
    ],
)
def test_given_malformed_webhook_expect_422_invalid_webhook(client: TestClient, url: Any) -> None:
    body = assert_problem(submit(client, url), 422)
    assert body["type"].endswith("/invalid-webhook"), body


def test_given_same_key_expect_webhook_part_of_the_request(client: TestClient, enqueued: EnqueueRecorder) -> None:
    content = upload_id(client)
    spec = {"method": "fast", "content": content, "webhook": "http://127.0.0.1:9/a"}
    first = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={**spec, "webhook": "http://127.0.0.1:9/b"}, headers={"Idempotency-Key": "k1"})
    assert_problem(other, 422, "idempotency-key-reused")
    assert len(enqueued.calls) == 1


def test_given_production_expect_https_unless_host_allowed(tmp_path: Path) -> None:
    prod = Settings(home=tmp_path, env="production", database_url="sqlite://", api_keys=f"{'k' * 32}=t")
    with pytest.raises(WebhookDestinationRefused, match="must use https"):
        check_destination("http://93.184.216.34/hook", prod)  # an IP literal: resolved, never contacted
    assert check_destination("https://93.184.216.34/hook", prod).addresses == ("93.184.216.34",)
    allowed = prod.model_copy(update={"webhook_allow_hosts": "10.8.0.0/16"})
    destination = check_destination("http://10.8.3.4:8080/in?x=1", allowed)
    assert (destination.host, destination.port, destination.target) == ("10.8.3.4", 8080, "/in?x=1")


def test_given_allow_list_expect_metadata_only_when_named_exactly(tmp_path: Path) -> None:
    wide = Settings(home=tmp_path, webhook_allow_hosts="169.254.0.0/16")
    assert check_destination("http://169.254.1.1/", wide).addresses == ("169.254.1.1",)
    with pytest.raises(WebhookDestinationRefused, match="cloud metadata"):
        check_destination("http://169.254.169.254/", wide)
    exact = Settings(home=tmp_path, webhook_allow_hosts="169.254.169.254")
    assert check_destination("http://169.254.169.254/", exact).addresses == ("169.254.169.254",)
    with pytest.raises(ValueError, match="not a host name"):
        Settings(home=tmp_path, webhook_allow_hosts="10.0.0.0/8, bad host!")


def test_given_tenants_expect_own_secrets_and_401_without_key(tmp_path: Path, enqueued: EnqueueRecorder) -> None:
    settings = Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0", api_keys="ka=alice,kb=bob")
    for client in make_client(settings):
        alice = client.get("/v1/webhook-secret", headers={"X-API-Key": "ka"}).json()
        bob = client.get("/v1/webhook-secret", headers={"X-API-Key": "kb"}).json()
        assert alice["secret"] != bob["secret"]
        assert client.get("/v1/webhook-secret", headers={"X-API-Key": "ka"}).json() == alice  # stable
        rotated = client.post("/v1/webhook-secret/rotate", headers={"X-API-Key": "ka"}).json()
        assert rotated["secret"] != alice["secret"]
        assert client.get("/v1/webhook-secret", headers={"X-API-Key": "ka"}).json() == rotated
        assert client.get("/v1/webhook-secret", headers={"X-API-Key": "kb"}).json() == bob  # untouched
        assert_problem(client.get("/v1/webhook-secret"), 401, "unauthorized")
        assert_problem(client.post("/v1/webhook-secret/rotate"), 401, "unauthorized")


def test_given_openapi_expect_secret_routes_and_webhook_field_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    read = schema["paths"]["/v1/webhook-secret"]["get"]
    rotate = schema["paths"]["/v1/webhook-secret/rotate"]["post"]
    for operation in (read, rotate):
        assert "application/problem+json" in operation["responses"]["401"]["content"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/WebhookSecretOut"
        )
    assert "webhook" in schema["paths"]["/v1/jobs"]["post"]["requestBody"]["description"]
    assert "webhook" in schema["components"]["schemas"]["JobOut"]["properties"]
