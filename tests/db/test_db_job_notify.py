"""Migration 0008_job_notify: PostgreSQL notifies ``stylefarm_jobs`` with the job's id when its
status or cancel flag changes (the API's event streams wake on it, ``api.job_wakeups``), and
not on progress writes (a notifying commit holds the notification-queue lock until it ends)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from shared.db import session as db_session
from shared.db.migrate import downgrade, upgrade
from shared.db.session import libpq_url
from shared.jobs import store
from shared.jobs.methods import parse_spec

SPEC = parse_spec({"method": "fast", "content": "a" * 64, "style": 1})
QUIET_S = 0.5  # a notification is delivered at commit; none within this long is none at all


@pytest.fixture
def pg(postgres_database: str) -> Iterator[str]:
    upgrade(postgres_database)
    db_session.configure(postgres_database)
    yield postgres_database
    db_session.configure(None)
    db_session.dispose_engines()


def notices(conn: psycopg.Connection, timeout: float = QUIET_S) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]


def test_given_a_listener_when_a_job_moves_expect_status_changes_notified_and_progress_not(pg: str) -> None:
    # given a session listening on the channel, and a queued job
    job, _ = store.create_job("t1", SPEC)
    with psycopg.connect(libpq_url(pg), autocommit=True) as conn:
        conn.execute("LISTEN stylefarm_jobs")
        # when a worker claims it: expect its id
        token = store.claim_job(job.id, task_id="t", worker="w").fencing_token
        assert notices(conn, timeout=5) == [job.id]
        # when it writes progress twice: expect nothing
        store.record_progress(job.id, token=token, step=1, total=3, stage="render")
        store.record_progress(job.id, token=token, step=2, total=3, stage="render")
        assert notices(conn) == []
        # when the client asks to cancel and the worker stops: one notification each
        store.request_cancel(job.id, "t1")
        assert notices(conn, timeout=5) == [job.id]
        store.mark_canceled(job.id, token=token)
        assert notices(conn, timeout=5) == [job.id]
        assert notices(conn) == []


def test_given_the_migration_undone_expect_no_trigger_and_no_notification(pg: str) -> None:
    # given the schema one migration back
    downgrade(pg, "0007_queue_position")
    job, _ = store.create_job("t1", SPEC)
    with psycopg.connect(libpq_url(pg), autocommit=True) as conn:
        objects = conn.execute("SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'jobs_notify'), "
                               "(SELECT count(*) FROM pg_proc WHERE proname = 'stylefarm_notify_job')").fetchone()
        assert objects == (0, 0)
        conn.execute("LISTEN stylefarm_jobs")
        # when the job changes status, expect silence; after upgrading again, its id
        store.claim_job(job.id, task_id="t", worker="w")
        assert notices(conn) == []
        upgrade(pg)
        store.request_cancel(job.id, "t1")
        assert notices(conn, timeout=5) == [job.id]
