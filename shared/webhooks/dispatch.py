"""Send the delivery task of a job's webhook event, by name, on the ``cpu`` queue.

``stylefarm.deliver_webhook(job_id, event_id)`` (``worker.webhooks``) makes one attempt and
sends itself again with a countdown for the next. ``notify_final`` is called right after a
final status is written (by the worker's task and by the API's cancel of a queued job);
``resend_lost`` is the sweeper's pass for the events whose message never came (see
the ``shared.webhooks`` docstring). Neither raises: a message that cannot be sent now is
sent by a later sweep.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.broker.client import CONNECT_TIMEOUT_S, client_app
from shared.db.orm import Job
from shared.errors import BrokerUnavailable
from shared.jobs import store
from shared.jobs.status import FINAL_STATUSES
from shared.settings import Settings, get_settings
from shared.webhooks.state import WebhookState, event_id, lost_deliveries, mark_due

log = logging.getLogger("stylefarm.webhooks")

DELIVER_WEBHOOK_TASK_NAME = "stylefarm.deliver_webhook"
QUEUE = "cpu"  # an HTTP request: no GPU needed
#: A pending event due for this long without an attempt lost its message: the sweep resends it.
RESEND_AFTER_S = 60.0


def send_delivery(job_id: str, msg_id: str, *, countdown: float = 0.0, settings: Settings | None = None) -> None:
    """Send ``stylefarm.deliver_webhook(job_id, msg_id)``; ``BrokerUnavailable`` when Redis
    cannot be reached within a few seconds."""
    app = client_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=CONNECT_TIMEOUT_S)
            app.send_task(
                DELIVER_WEBHOOK_TASK_NAME,
                args=[job_id, msg_id],
                queue=QUEUE,
                routing_key=QUEUE,
                countdown=countdown or None,
                connection=conn,
            )
    except Exception as exc:  # kombu/redis raise many types; all mean "broker not reachable"
        raise BrokerUnavailable(f"the job queue is unreachable ({type(exc).__name__})") from None


def notify_final(job: Job, settings: Settings | None = None) -> bool:
    """Send the delivery task of ``job``'s event if it has one still to try; True when sent."""
    if not job.webhook_url or job.webhook_state != WebhookState.PENDING or job.status not in FINAL_STATUSES:
        return False
    if not mark_due(job.id):
        return False  # sent already (a repeated cancel), or under way: its own retries and the sweep carry on
    try:
        send_delivery(job.id, event_id(job), settings=settings)
        return True
    except BrokerUnavailable as exc:
        log.warning("webhook of job %s: %s; the sweeper sends it later", job.id, exc.detail)
        return False


def resend_lost(
    settings: Settings | None = None, older_than_s: float = RESEND_AFTER_S, now: datetime | None = None
) -> list[str]:
    """The sweeper's pass: send again the delivery task of every pending event whose
    message was lost (due for more than ``older_than_s`` as of ``now``); returns the job ids sent."""
    sent: list[str] = []
    for job_id in lost_deliveries(older_than_s, now):
        job = store.get_job(job_id)
        try:
            send_delivery(job_id, event_id(job), settings=settings or get_settings())
        except BrokerUnavailable as exc:
            log.warning("webhook of job %s: %s", job_id, exc.detail)
            break
        sent.append(job_id)
    return sent
