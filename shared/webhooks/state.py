"""The delivery state of a job's webhook event, in the job row (the row is the outbox).

``webhook_state``: ``pending`` from submit until the event is ``delivered``, or ``failed``
(the attempts ran out, or the destination was refused at delivery time).
``webhook_attempts`` counts attempts begun; ``webhook_next_attempt_at`` is when the next is
due (set to the finishing time by ``mark_due`` when the first message is sent), or, while
one runs, the end of its lease (``LEASE_S``), so a second message for the same event finds
it not due and does nothing.

Every write here is one conditional UPDATE that also bumps ``Job.revision`` (like every
write of a job row), so the job's event stream and pollers see the delivery progress. They
never touch ``status``: that has one writer, ``shared.jobs.store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult

from shared.db.orm import Job, utcnow
from shared.db.session import session_scope
from shared.jobs.status import FINAL_STATUSES

#: Seconds an attempt holds its event: above the transport's total timeout, with room for
#: the SQL and signing around it.
LEASE_S = 60.0
#: A retry message runs at its ETA by the consuming worker's clock, which is ``next_attempt_at``
#: by that same clock; Celery's timer may fire a few milliseconds early: still due.
EARLY_TOLERANCE_S = 0.1
ERROR_LEN = 500
BATCH = 500

_FINAL = tuple(s.value for s in FINAL_STATUSES)


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def event_id(job: Job) -> str:
    """The ``webhook-id`` of the job's event: a job reaches a final status once, so one event
    per job, and the id is the same on every attempt."""
    return f"evt_{job.id}_{job.status}"


def _update(job_id: str, *conditions: Any, **values: Any) -> Job | None:
    """``UPDATE jobs SET values, revision + 1 WHERE id AND conditions``; the job when it matched."""
    with session_scope() as session:
        result = cast(
            CursorResult[Any],
            session.execute(
                update(Job)
                .where(Job.id == job_id, *conditions)
                .values(**values, revision=Job.revision + 1, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            ),
        )
        if result.rowcount != 1:
            return None
        return session.get(Job, job_id, populate_existing=True)


def mark_due(job_id: str, now: datetime | None = None) -> bool:
    """The final status was just written: the first attempt is due now. True for the one
    caller that set it (it sends the delivery message); False when it was already due,
    under way or done, so a repeated notice sends nothing."""
    return (
        _update(
            job_id,
            Job.status.in_(_FINAL),
            Job.webhook_state == WebhookState.PENDING.value,
            Job.webhook_attempts == 0,
            Job.webhook_next_attempt_at.is_(None),
            webhook_next_attempt_at=now or utcnow(),
        )
        is not None
    )


def claim_attempt(job_id: str, now: datetime | None = None) -> Job | None:
    """Begin the next delivery attempt of the job's event: ``webhook_attempts + 1`` and a
    lease, if the job is final, its event pending and due. Returns the job (its
    ``webhook_attempts`` is this attempt's number), or None when there is nothing to do now."""
    now = now or utcnow()
    return _update(
        job_id,
        Job.status.in_(_FINAL),
        Job.webhook_state == WebhookState.PENDING.value,
        or_(
            Job.webhook_next_attempt_at.is_(None),
            Job.webhook_next_attempt_at <= now + timedelta(seconds=EARLY_TOLERANCE_S),
        ),
        webhook_attempts=Job.webhook_attempts + 1,
        webhook_next_attempt_at=now + timedelta(seconds=LEASE_S),
    )


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt ended with."""

    state: WebhookState
    status: int | None = None  # HTTP status, None without a response
    error: str | None = None
    next_attempt_at: datetime | None = None  # pending: when the retry is due


def record_attempt(job_id: str, attempt: int, record: AttemptRecord) -> bool:
    """Store the result of attempt number ``attempt``; False (nothing written) when the event
    is no longer pending or a later attempt has begun meanwhile."""
    now = utcnow()
    done = _update(
        job_id,
        Job.webhook_state == WebhookState.PENDING.value,
        Job.webhook_attempts == attempt,
        webhook_state=record.state.value,
        webhook_last_status=record.status,
        webhook_last_error=record.error[:ERROR_LEN] if record.error else None,
        webhook_delivered_at=now if record.state is WebhookState.DELIVERED else None,
        webhook_next_attempt_at=record.next_attempt_at if record.state is WebhookState.PENDING else None,
    )
    return done is not None


def lost_deliveries(older_than_s: float, now: datetime | None = None, limit: int = BATCH) -> list[str]:
    """Ids of final jobs whose pending event has been due for more than ``older_than_s``:
    never tried since the job finished, or its retry (or a lease) overdue. Their message was
    lost (or never sent); the sweeper sends it again."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    with session_scope() as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(
                    Job.webhook_state == WebhookState.PENDING.value,
                    Job.status.in_(_FINAL),
                    or_(
                        and_(Job.webhook_next_attempt_at.is_(None), Job.finished_at < cutoff),
                        Job.webhook_next_attempt_at < cutoff,
                    ),
                )
                .order_by(Job.finished_at)
                .limit(limit)
            )
        )
