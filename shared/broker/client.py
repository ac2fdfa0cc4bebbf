"""Send jobs to the workers: a lightweight Celery *client* (no worker code, no torch).

The API calls ``enqueue_job(job_id, queue)`` after the job row is committed. The task is
sent by name (``RUN_JOB_TASK_NAME``, ``"stylefarm.run_job"``) with ``[job_id]`` as its only
argument; each call gets a fresh task id, so a job enqueued twice (the reconciler re-sending
a job that looks lost) still runs once: ``claim_job`` lets only the first message through.

When Redis is unreachable this fails fast (a few seconds) with ``BrokerUnavailable``
(retryable): the job stays ``queued`` and the reconciler sends it again later.
"""

from __future__ import annotations

import logging
import threading
import uuid

from celery import Celery

from shared.broker.celery_config import QUEUES, RUN_JOB_TASK_NAME, celery_config, kombu_priority
from shared.errors import BrokerUnavailable
from shared.jobs.methods import REGISTRY
from shared.settings import Settings, get_settings

log = logging.getLogger("stylefarm.broker")

_apps: dict[str, Celery] = {}
_lock = threading.Lock()

CONNECT_TIMEOUT_S = 3.0


def client_app(settings: Settings | None = None) -> Celery:
    """One Celery client app per broker URL (thread-safe, created on first use)."""
    s = settings or get_settings()
    with _lock:
        app = _apps.get(s.broker_url)
        if app is None:
            app = Celery("stylefarm-client", set_as_current=False)
            app.conf.update(**celery_config(s))
            _apps[s.broker_url] = app
        return app


def enqueue_job(job_id: str, queue: str, priority: int = 0, *, method: str | None = None,
                settings: Settings | None = None) -> str:
    """Send ``stylefarm.run_job(job_id)`` to ``queue``; returns the Celery task id.

    ``priority``: 0 (normal) .. 9 (most urgent). ``method``: when given, the task carries
    that method's soft/hard time limits (the worker applies them anyway once it has read
    the job). Raises ``BrokerUnavailable`` when Redis cannot be reached within a few seconds.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    app = client_app(settings)
    task_id = str(uuid.uuid4())
    options: dict = {}
    if method in REGISTRY:
        options["soft_time_limit"], options["time_limit"] = REGISTRY[method].time_limits
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.5, timeout=CONNECT_TIMEOUT_S)
            app.send_task(
                RUN_JOB_TASK_NAME,
                args=[job_id],
                task_id=task_id,
                queue=queue,
                routing_key=queue,
                priority=kombu_priority(priority),
                connection=conn,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
                **options,
            )
    except BrokerUnavailable:
        raise
    except Exception as exc:  # kombu/redis raise many types; all mean "broker not reachable"
        log.warning("enqueue job %s to %s failed: %s: %s", job_id, queue, type(exc).__name__, exc)
        raise BrokerUnavailable(
            f"the job queue is unreachable ({type(exc).__name__}); the job stays queued and is sent again later"
        ) from None
    log.info("job %s sent to queue %s as task %s (priority %s)", job_id, queue, task_id, priority)
    return task_id


def queue_lengths(settings: Settings | None = None) -> dict[str, int]:
    """Waiting messages per queue (all priority lists together)."""
    from shared.broker.celery_config import queue_list_names

    app = client_app(settings)
    out: dict[str, int] = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
            client = conn.default_channel.client
            for q in QUEUES:
                out[q] = sum(int(client.llen(name)) for name in queue_list_names(q))
    except Exception as exc:
        raise BrokerUnavailable(f"the job queue is unreachable ({type(exc).__name__})") from None
    return out
