"""The webhook delivery state in SQL (``shared.webhooks.state``) and the tenants' signing
secrets (``shared.webhooks.secrets``), on SQLite and PostgreSQL: one attempt at a time,
stale results dropped, lost messages found, secrets made once and rotated."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import redis
from standardwebhooks import Webhook

from shared.db.orm import utcnow
from shared.jobs import store
from shared.settings import Settings
from shared.webhooks import dispatch, secrets, state
from shared.webhooks.state import AttemptRecord, WebhookState

from harness import (
    RedisServer,
    race,  # n threads released together
)

SPEC = {"method": "fast", "content": "a" * 64}
HOOK = "http://127.0.0.1:9/hook"


def finished_job(webhook: str | None = HOOK) -> str:
    job, _ = store.create_job("t1", SPEC, webhook_url=webhook)
    claimed = store.claim_job(job.id, task_id="task", worker="w")
    assert claimed is not None
    result = {"keys": {"image": "k"}, "width": 1, "height": 1, "size_bytes": 1}
    store.succeed_job(job.id, result, token=claimed.fencing_token)
    return job.id


def test_given_webhook_expect_pending_and_event_id_per_final_status(db_url: str) -> None:
    job, _ = store.create_job("t1", SPEC, webhook_url=HOOK)
    assert job.webhook_url == HOOK and job.webhook_state == "pending" and job.webhook_attempts == 0
    plain, _ = store.create_job("t1", SPEC)
    assert plain.webhook_url is None and plain.webhook_state is None
    assert state.claim_attempt(job.id) is None  # queued: nothing to deliver yet
    store.request_cancel(job.id, "t1")
    assert state.event_id(store.get_job(job.id)) == f"evt_{job.id}_canceled"


def test_given_final_job_when_many_claim_at_once_expect_one_attempt(db_url: str) -> None:
    job_id = finished_job()
    revision = store.get_job(job_id).revision

    claims = race(6, lambda i: state.claim_attempt(job_id))

    assert not [c for c in claims if isinstance(c, Exception)], claims
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].webhook_attempts == 1
    job = store.get_job(job_id)
    assert job.webhook_attempts == 1 and job.status == "succeeded" and job.revision == revision + 1
    assert job.webhook_next_attempt_at is not None
    assert job.webhook_next_attempt_at > utcnow() + timedelta(seconds=state.LEASE_S - 10)  # leased


def test_given_failed_attempt_expect_retry_due_then_claimable(db_url: str) -> None:
    job_id = finished_job()
    assert state.claim_attempt(job_id) is not None
    due = utcnow() + timedelta(seconds=30)
    assert state.record_attempt(job_id, 1, AttemptRecord(WebhookState.PENDING, 500, "HTTP 500", due))

    assert state.claim_attempt(job_id) is None  # not due yet
    job = state.claim_attempt(job_id, now=due)
    assert job is not None and job.webhook_attempts == 2 and job.webhook_last_status == 500


def test_given_stale_attempt_result_expect_dropped(db_url: str) -> None:
    job_id = finished_job()
    state.claim_attempt(job_id)
    later = utcnow() + timedelta(seconds=state.LEASE_S + 1)
    assert state.claim_attempt(job_id, now=later) is not None  # attempt 1's lease ran out: attempt 2

    assert not state.record_attempt(job_id, 1, AttemptRecord(WebhookState.PENDING, 500, "late"))  # attempt 1 ends
    assert state.record_attempt(job_id, 2, AttemptRecord(WebhookState.DELIVERED, 204))
    job = store.get_job(job_id)
    assert job.webhook_state == "delivered" and job.webhook_last_status == 204 and job.webhook_delivered_at
    assert job.webhook_next_attempt_at is None and job.webhook_last_error is None
    assert state.claim_attempt(job_id, now=later + timedelta(hours=1)) is None  # delivered: done
    assert not state.record_attempt(job_id, 2, AttemptRecord(WebhookState.FAILED, error="x"))


def test_given_final_job_when_notified_twice_expect_due_once(db_url: str) -> None:
    job_id = finished_job()
    assert race(4, lambda i: state.mark_due(job_id)).count(True) == 1
    assert store.get_job(job_id).webhook_next_attempt_at is not None
    assert not state.mark_due(finished_job(webhook=None))  # no webhook: nothing to send


def test_given_lost_messages_expect_found_by_the_sweep(db_url: str) -> None:
    never_sent = finished_job()
    sent_and_lost = finished_job()
    state.mark_due(sent_and_lost)
    retry_lost = finished_job()
    state.claim_attempt(retry_lost)
    state.record_attempt(retry_lost, 1, AttemptRecord(WebhookState.PENDING, 500, "HTTP 500", utcnow()))
    delivered = finished_job()
    state.claim_attempt(delivered)
    state.record_attempt(delivered, 1, AttemptRecord(WebhookState.DELIVERED, 200))
    gave_up = finished_job()
    state.claim_attempt(gave_up)
    state.record_attempt(gave_up, 1, AttemptRecord(WebhookState.FAILED, 500, "gave up"))
    leased = finished_job()
    state.claim_attempt(leased)  # an attempt under way
    store.create_job("t1", SPEC, webhook_url=HOOK)  # queued: not due

    later = utcnow() + timedelta(seconds=30)
    assert state.lost_deliveries(60, now=later) == []  # nothing overdue yet
    found = state.lost_deliveries(10, now=later)
    assert sorted(found) == sorted([never_sent, sent_and_lost, retry_lost])
    past_lease = utcnow() + timedelta(seconds=state.LEASE_S + 20)
    assert leased in state.lost_deliveries(10, now=past_lease)  # its worker died mid-attempt


def test_given_tenant_expect_secret_made_once_and_rotated(db_url: str) -> None:
    made = race(4, lambda i: secrets.get_secret("t1").secret)
    assert len(set(made)) == 1
    secret = made[0]
    assert secret.startswith("whsec_") and Webhook(secret).sign("m", utcnow(), "{}").startswith("v1,")
    assert secrets.get_secret("t1").secret == secret
    assert secrets.get_secret("t2").secret != secret

    rotated = secrets.rotate_secret("t1")
    assert rotated.secret != secret and secrets.get_secret("t1").secret == rotated.secret
    assert secrets.rotate_secret("t3").secret == secrets.get_secret("t3").secret  # rotate before any use


def test_given_lost_message_when_reconciled_expect_task_resent_on_cpu_queue(
    db_url: str, redis_server: RedisServer
) -> None:
    # given a finished job whose delivery message never reached the broker, a minute ago
    job_id = finished_job()
    settings = Settings(broker_url=redis_server.url.rsplit("/", 1)[0] + "/6")
    redis_client = redis.Redis.from_url(settings.broker_url)
    redis_client.flushdb()

    # when the reconciler's pass runs (a minute later), expect the task sent once, by name, on cpu
    later = utcnow() + timedelta(seconds=dispatch.RESEND_AFTER_S + 5)
    assert dispatch.resend_lost(settings, now=later) == [job_id]
    messages = [json.loads(raw) for raw in redis_client.lrange(dispatch.QUEUE, 0, -1)]
    assert [m["headers"]["task"] for m in messages] == [dispatch.DELIVER_WEBHOOK_TASK_NAME]
    args = json.loads(base64.b64decode(messages[0]["body"]))[0]
    assert args == [job_id, f"evt_{job_id}_succeeded"]
    assert dispatch.resend_lost(settings) == []  # not overdue as of now
    redis_client.flushdb()
    redis_client.close()
