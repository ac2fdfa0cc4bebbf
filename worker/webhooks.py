"""The Celery task ``stylefarm.deliver_webhook(job_id, event_id)``: one delivery attempt of a
job's webhook event (``shared.webhooks.delivery.deliver``), then the same task again, by
itself, after the backoff while the event is still pending.

Sent on the ``cpu`` queue by ``shared.webhooks.dispatch`` (after a final status is written,
and by the sweeper's pass for lost messages). At-least-once: ``acks_late`` puts the
message back when the worker dies, and a second message for the same event does nothing
while an attempt holds it (``shared.webhooks.state.claim_attempt``).
"""

from __future__ import annotations

import logging

from celery import Task

from shared.errors import StylefarmError
from shared.settings import get_settings
from shared.webhooks.delivery import deliver
from shared.webhooks.dispatch import DELIVER_WEBHOOK_TASK_NAME
from worker.celery_app import app

log = logging.getLogger("stylefarm.webhooks")

#: Retries of the task itself when the database is unreachable (the sweep takes over after).
INFRA_RETRIES = 8


@app.task(
    name=DELIVER_WEBHOOK_TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=None,
)
def deliver_webhook(self: Task, job_id: str, event_id: str) -> str:
    """One attempt; returns what became of the event ("delivered", "pending", "failed") or
    "skipped" when there was nothing to do."""
    try:
        attempt = deliver(job_id, event_id, get_settings())
    except StylefarmError as exc:
        if exc.retryable and self.request.retries < INFRA_RETRIES:
            log.warning("webhook %s: %s; retrying", event_id, exc)
            raise self.retry(countdown=min(60, 2**self.request.retries), max_retries=None) from None
        raise
    if attempt is None:
        return "skipped"
    retry_in = attempt.retry_in_s
    if retry_in is not None:
        raise self.retry(countdown=retry_in, max_retries=None)
    return attempt.record.state.value
