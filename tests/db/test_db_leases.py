"""Leases with fencing (``shared.jobs.store``) and the sweeper (``worker.sweeper``), on SQLite and
PostgreSQL and a real Redis: a stale holder's writes are refused and change nothing, an expired
lease is taken back only by the sweeper, queued jobs without a message are sent again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from shared.broker.celery_config import queue_list_names
from shared.db.orm import Job, utcnow
from shared.db.session import session_scope
from shared.errors import LeaseLost
from shared.jobs import store
from shared.settings import Settings

from harness import RedisServer

SPEC = {"method": "fast", "content": "a" * 64}
RESULT = {"keys": {"image": "k"}, "width": 1, "height": 1, "metrics": {}}
PROBLEM = {"type": "https://stylefarm.dev/problems/engine-error", "title": "x", "status": 500, "detail": "boom"}


@pytest.fixture
def broker(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on a Redis database of its own (database 0 belongs to the farms), emptied after."""
    import redis

    url = redis_server.url.rsplit("/", 1)[0] + "/10"
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield Settings()
    client.flushdb()


def expire(job_id: str) -> None:
    """The holder stopped renewing: its lease ran out a minute ago."""
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(minutes=1)))


def snapshot(job_id: str) -> dict[str, Any]:
    job = store.get_job(job_id)
    keys = ("status", "fencing_token", "attempts", "worker", "step", "stage", "result", "error", "lease_expires_at")
    return {k: getattr(job, k) for k in keys}


def test_given_a_claim_when_renewed_expect_a_later_lease(db_url: str) -> None:
    job, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(job.id, task_id="m1", worker="w1")
    assert claimed is not None and claimed.fencing_token == 1
    ttl = Settings().lease_ttl_s
    assert abs((claimed.lease_expires_at - claimed.started_at).total_seconds() - ttl) < 1
    time.sleep(0.05)
    store.renew_lease(job.id, claimed.fencing_token)
    assert store.get_job(job.id).lease_expires_at > claimed.lease_expires_at


def test_given_a_stale_holder_when_it_writes_after_the_job_was_swept_and_claimed_again_expect_refused(
    db_url: str, broker: Settings
) -> None:
    """Claim, lease expires, sweep, re-claim: every write of the old token raises
    ``LeaseLost`` and changes nothing; the new holder's writes go through."""
    from shared.broker.client import queue_lengths
    from worker.sweeper import sweep

    # given a job claimed by worker 1 whose lease expired (worker 1 was cut off)
    job, _ = store.create_job("t1", SPEC)
    old = store.claim_job(job.id, task_id="m1", worker="w1")
    assert old is not None
    store.record_progress(job.id, token=old.fencing_token, step=3, total=10)
    expire(job.id)
    # when the sweeper requeues it and worker 2 claims it
    report = sweep(broker)
    assert report.requeued == [job.id] and report.errors == []
    assert queue_lengths(broker)["gpu"] == 1  # and sends it again
    new = store.claim_job(job.id, task_id="m2", worker="w2")
    assert new is not None and new.fencing_token == old.fencing_token + 1 and new.attempts == 2
    store.record_progress(job.id, token=new.fencing_token, step=1, total=10, stage="w2")
    before = snapshot(job.id)

    # then each write of worker 1 raises and leaves the row as worker 2 has it
    stale = old.fencing_token
    writes = {
        "progress": lambda: store.record_progress(job.id, token=stale, step=9, total=10, stage="w1"),
        "renew": lambda: store.renew_lease(job.id, stale),
        "check": lambda: store.check_lease(job.id, stale),
        "succeed": lambda: store.succeed_job(job.id, RESULT, token=stale),
        "fail": lambda: store.fail_job(job.id, PROBLEM, token=stale),
        "cancel ack": lambda: store.mark_canceled(job.id, token=stale),
        "requeue": lambda: store.requeue_job(job.id, PROBLEM, token=stale),
    }
    for name, write in writes.items():
        with pytest.raises(LeaseLost) as info:
            write()
        assert info.value.extra["fencing_token"] == new.fencing_token, name
        assert snapshot(job.id) == before, f"the stale {name} changed the row"

    # and worker 2 finishes the job
    assert store.succeed_job(job.id, RESULT, token=new.fencing_token).status == "succeeded"


def test_given_a_live_lease_when_swept_expect_untouched(db_url: str, broker: Settings) -> None:
    from worker.sweeper import sweep

    job, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(job.id, task_id="m1", worker="w1")
    assert claimed is not None
    before = snapshot(job.id)
    assert sweep(broker).requeued == []
    assert snapshot(job.id) == before


def test_given_an_expired_lease_when_the_holder_renews_before_the_sweeper_writes_expect_kept(db_url: str) -> None:
    """``expire_lease`` is conditional on the lease still being expired and on the token the
    sweeper read: a renewal, or another claim, in between wins."""
    job, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(job.id, task_id="m1", worker="w1")
    assert claimed is not None
    expire(job.id)
    store.renew_lease(job.id, claimed.fencing_token)  # the holder came back just in time
    assert store.expire_lease(job.id, token=claimed.fencing_token, problem=PROBLEM) is None
    assert store.get_job(job.id).status == "running"
    expire(job.id)
    assert store.expire_lease(job.id, token=claimed.fencing_token + 1, problem=PROBLEM) is None
    assert store.get_job(job.id).status == "running"
    assert store.expire_lease(job.id, token=claimed.fencing_token, problem=PROBLEM).status == "queued"


def _queued_without_message(age_s: float = 60) -> str:
    job, _ = store.create_job("t1", SPEC)
    with session_scope() as session:  # accepted a minute ago while the broker was down
        session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow() - timedelta(seconds=age_s)))
    return job.id


def _deliver(settings: Settings, delivered_s_ago: float) -> None:
    """Move the one waiting message to the unacknowledged hash, as kombu does when a worker
    takes it, delivered ``delivered_s_ago`` seconds ago."""
    import redis

    client = redis.Redis.from_url(settings.broker_url)
    raw = next(m for name in queue_list_names("gpu") if (m := client.lpop(name)) is not None)
    tag = json.loads(raw)["properties"]["delivery_tag"]
    client.hset("unacked", tag, json.dumps([json.loads(raw), "stylefarm", "gpu"]))
    client.zadd("unacked_index", {tag: time.time() - delivered_s_ago})


def test_given_a_queued_job_without_a_message_when_swept_expect_sent_once(db_url: str, broker: Settings) -> None:
    from shared.broker.client import queue_lengths
    from worker.sweeper import sweep

    job_id = _queued_without_message()
    assert sweep(broker).resent == [job_id]
    assert queue_lengths(broker)["gpu"] == 1
    assert sweep(broker).resent == []  # its message is waiting now
    _deliver(broker, delivered_s_ago=5)
    assert sweep(broker).resent == []  # delivered a moment ago: a worker holds it


def test_given_only_a_long_unacknowledged_message_when_swept_expect_sent_again(db_url: str, broker: Settings) -> None:
    """The message of a worker that died whole stays unacknowledged until the visibility
    timeout (hours); it must not hide a job the sweeper requeued."""
    from worker.sweeper import UNACKED_FRESH_S, sweep

    job_id = _queued_without_message()
    assert sweep(broker).resent == [job_id]
    _deliver(broker, delivered_s_ago=UNACKED_FRESH_S + 60)
    assert sweep(broker).resent == [job_id]


def test_given_two_sweepers_expect_one_pass_per_interval(broker: Settings) -> None:
    from worker.sweeper import take_tick

    settings = broker.model_copy(update={"sweep_interval_s": 0.5})
    assert take_tick(settings, "a") is True
    assert take_tick(settings, "b") is False
    time.sleep(0.5)
    assert take_tick(settings, "b") is True


def test_given_no_redis_expect_no_tick() -> None:
    from shared.cli.stack import free_port
    from worker.sweeper import take_tick

    assert take_tick(Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0"), "a") is False


def test_given_a_renewal_slower_than_half_the_lease_expect_settings_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at most half of lease_ttl_s"):
        Settings(lease_ttl_s=5, lease_renew_s=3)
    assert Settings(lease_ttl_s=6, lease_renew_s=3).lease_renew_s == 3


def test_given_a_dead_pool_process_when_its_worker_releases_it_expect_only_that_claim_requeued(db_url: str) -> None:
    """The worker main process names the task and itself: a claim of another task or another
    worker is left alone; the dead claim's job is queued again at once, its old token fenced."""
    job, _ = store.create_job("t1", SPEC)
    claim = store.claim_job(job.id, task_id="m1", worker="w1")
    assert claim is not None
    before = snapshot(job.id)

    # when the wrong worker or the wrong task reports a dead process, expect nothing written
    assert store.release_dead_process(job.id, task_id="m1", worker="w2", problem=PROBLEM) is None
    assert store.release_dead_process(job.id, task_id="m9", worker="w1", problem=PROBLEM) is None
    assert snapshot(job.id) == before

    # when the holder's own worker reports it, expect queued now (no lease left) and the old token refused
    released = store.release_dead_process(job.id, task_id="m1", worker="w1", problem=PROBLEM)
    assert released is not None and released.status == "queued" and released.lease_expires_at is None
    with pytest.raises(LeaseLost):
        store.record_progress(job.id, token=claim.fencing_token, step=1, total=2)
    again = store.claim_job(job.id, task_id="m1", worker="w1")  # the message Celery puts back
    assert again is not None and again.fencing_token == claim.fencing_token + 1 and again.attempts == 2
