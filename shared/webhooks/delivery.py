"""One delivery attempt of a job's webhook event, start to end (the worker's task calls it).

1. Claim the attempt (``state.claim_attempt``: the event is pending and due; else nothing to do).
2. Check the destination again and resolve it now (``destinations.check_destination``): a
   refused address ends the event as ``failed`` at once, a name that does not resolve is a
   failed attempt like any other.
3. Sign the body with the tenant's secret as of now and POST it to the checked address
   (``transport.post``).
4. Record the result: a 2xx is ``delivered``; anything else (another status, a redirect,
   no response) is retried after ``backoff_s(attempt)`` until ``Settings.webhook_max_attempts``
   attempts have been made, then the event is ``failed``.
"""

from __future__ import annotations

import http.client
import logging
from dataclasses import dataclass
from datetime import timedelta

from shared.db.orm import Job, utcnow
from shared.errors import InvalidWebhook, NotFound, WebhookDestinationRefused
from shared.jobs import store
from shared.settings import Settings
from shared.webhooks import state, transport
from shared.webhooks.destinations import check_destination
from shared.webhooks.events import event_body, signed_headers
from shared.webhooks.secrets import get_secret
from shared.webhooks.state import AttemptRecord, WebhookState, event_id

log = logging.getLogger("stylefarm.webhooks")


def backoff_s(attempt: int, settings: Settings) -> float:
    """Seconds between failed attempt number ``attempt`` (1-based) and the next."""
    return float(min(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Attempt:
    """What one call of ``deliver`` did: attempt number ``number`` ended in ``record``."""

    number: int
    record: AttemptRecord

    @property
    def retry_in_s(self) -> float | None:
        """Seconds until the next attempt is due; None when there is none (delivered, failed)."""
        if self.record.next_attempt_at is None:
            return None
        return max(0.0, (self.record.next_attempt_at - utcnow()).total_seconds())


def deliver(job_id: str, msg_id: str, settings: Settings) -> Attempt | None:
    """Make the next attempt at delivering event ``msg_id`` of job ``job_id``; None when there
    is nothing to do now (no such event, not due, already delivered or failed)."""
    try:
        job = store.get_job(job_id)
    except NotFound:
        job = None
    if job is None or job.webhook_url is None or event_id(job) != msg_id:
        log.warning("webhook %s of job %s: no such event; dropped", msg_id, job_id)
        return None
    claimed = state.claim_attempt(job_id)
    if claimed is None:
        return None
    number = claimed.webhook_attempts
    record = _attempt(claimed, msg_id, number, settings)
    if not state.record_attempt(job_id, number, record):
        log.warning("webhook %s: attempt %d outlived its lease; its result is dropped", msg_id, number)
    log.info("webhook %s attempt %d: %s %s", msg_id, number, record.state.value, record.error or record.status)
    return Attempt(number, record)


def _attempt(job: Job, msg_id: str, number: int, settings: Settings) -> AttemptRecord:
    assert job.webhook_url is not None
    try:
        destination = check_destination(job.webhook_url, settings)
    except WebhookDestinationRefused as exc:  # DNS points somewhere else now: no retry
        return AttemptRecord(WebhookState.FAILED, error=exc.detail)
    except InvalidWebhook as exc:  # e.g. the name does not resolve right now
        return _failed(number, None, exc.detail, settings)
    body = event_body(job, settings.public_url.rstrip("/"))
    headers = signed_headers(get_secret(job.tenant).secret, msg_id, body)
    try:
        response = transport.post(destination, body.encode(), headers)
    except (OSError, http.client.HTTPException) as exc:
        where = ", ".join(destination.addresses)
        return _failed(number, None, f"no response from {where}: {type(exc).__name__}: {exc}", settings)
    if 200 <= response.status < 300:
        return AttemptRecord(WebhookState.DELIVERED, status=response.status)
    if 300 <= response.status < 400:
        error = f"HTTP {response.status}: a redirect (to {response.location or 'nowhere'}) is not followed"
    else:
        error = f"HTTP {response.status}"
    return _failed(number, response.status, error, settings)


def _failed(number: int, status: int | None, error: str, settings: Settings) -> AttemptRecord:
    """Attempt ``number`` failed: retry after its backoff, or give up after the last one."""
    if number >= settings.webhook_max_attempts:
        return AttemptRecord(WebhookState.FAILED, status, f"{error}; gave up after {number} attempts")
    next_at = utcnow() + timedelta(seconds=backoff_s(number, settings))
    return AttemptRecord(WebhookState.PENDING, status, error, next_at)
