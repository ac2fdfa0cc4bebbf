"""Send jobs to the workers: a lightweight Celery *client* (no worker code, no torch).

The API calls ``enqueue_job(job_id, queue)`` after the job row is committed. The task is
sent by name (``RUN_JOB_TASK_NAME``, ``"stylefarm.run_job"``) with ``[job_id]`` as its only
argument; each call gets a fresh task id, so a job enqueued twice (the sweeper re-sending
a job that looks lost) still runs once: ``claim_job`` lets only the first message through.

Sends go over pooled connections. When Redis is unreachable or hung this fails fast (a few
seconds: ``CONNECT_TIMEOUT_S`` to connect, ``SOCKET_TIMEOUT_S`` per answer, waited once; a
pooled connection that a restarted Redis reset is retried once on a new one) with ``BrokerUnavailable``
(retryable): the job stays ``queued`` and the sweeper (``worker.sweeper``) sends it within
seconds of Redis's return.

``queue_lengths`` / ``queue_depths``: the waiting messages of each queue (and of each of its
priority lists), for ``GET /v1/queues`` and monitoring.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from celery import Celery

from shared.broker.celery_config import (
    QUEUES,
    RUN_JOB_TASK_NAME,
    celery_config,
    kombu_priority,
    queue_list_names,
)
from shared.errors import BrokerUnavailable
from shared.jobs.methods import REGISTRY
from shared.settings import Settings, get_settings

log = logging.getLogger("stylefarm.broker")

_apps: dict[str, Celery] = {}
_lock = threading.Lock()

CONNECT_TIMEOUT_S = 3.0
#: The client's commands are short (LPUSH, LLEN, LRANGE): a Redis that does not answer one
#: within this is treated as down (the workers keep the longer timeout of their BRPOP loop).
SOCKET_TIMEOUT_S = 3.0


def client_app(settings: Settings | None = None) -> Celery:
    """One Celery client app per broker URL (thread-safe, created on first use)."""
    s = settings or get_settings()
    with _lock:
        app = _apps.get(s.broker_url)
        if app is None:
            app = Celery("stylefarm-client", set_as_current=False)
            conf = celery_config(s)
            conf["broker_transport_options"] = {
                **conf["broker_transport_options"],
                "socket_connect_timeout": CONNECT_TIMEOUT_S,
                "socket_timeout": SOCKET_TIMEOUT_S,
            }
            app.conf.update(**conf)
            _apps[s.broker_url] = app
        return app


def forget_clients() -> None:
    """Drop the client apps (and their connection pools) without closing them: a process
    forked from one that used them must open its own connections."""
    with _lock:
        _apps.clear()


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
    def publish(conn: Any) -> None:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.5, timeout=CONNECT_TIMEOUT_S)
        app.send_task(RUN_JOB_TASK_NAME, args=[job_id], task_id=task_id, queue=queue, routing_key=queue,
                      priority=kombu_priority(priority), connection=conn, retry=False, **options)

    try:
        # A pooled connection (Celery's broker pool): a new one per job cost the API a connect and
        # a queue declaration on every submit. A pooled connection that fails is dropped (no network
        # I/O); a quick failure (a restarted Redis reset it) is tried once more on a new connection,
        # one that took the whole socket timeout (a hung Redis) is not waited for twice.
        with app.pool.acquire(block=True, timeout=CONNECT_TIMEOUT_S) as conn:
            started = time.monotonic()
            try:
                publish(conn)
            except Exception:
                conn.collect()
                if time.monotonic() - started >= 0.9 * SOCKET_TIMEOUT_S:
                    raise
                with app.connection_for_write() as fresh:
                    publish(fresh)
    except BrokerUnavailable:
        raise
    except Exception as exc:  # kombu/redis raise many types; all mean "broker not reachable"
        log.warning("enqueue job %s to %s failed: %s: %s", job_id, queue, type(exc).__name__, exc)
        raise BrokerUnavailable(
            f"the job queue is unreachable ({type(exc).__name__}); the job stays queued and is sent again later"
        ) from None
    log.info("job %s sent to queue %s as task %s (priority %s)", job_id, queue, task_id, priority)
    return task_id


def queue_depths(settings: Settings | None = None) -> dict[str, dict[str, int]]:
    """Waiting messages of each queue, per Redis priority list: ``{queue: {list name: n}}``
    with the lists most urgent first (``queue_list_names``). One pipelined round trip."""
    app = client_app(settings)
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
            pipe = conn.default_channel.client.pipeline(transaction=False)
            names = [(q, name) for q in QUEUES for name in queue_list_names(q)]
            for _q, name in names:
                pipe.llen(name)
            lengths = pipe.execute()
    except Exception as exc:
        raise BrokerUnavailable(f"the job queue is unreachable ({type(exc).__name__})") from None
    out: dict[str, dict[str, int]] = {q: {} for q in QUEUES}
    for (q, name), n in zip(names, lengths, strict=True):
        out[q][name] = int(n)
    return out


def queue_lengths(settings: Settings | None = None) -> dict[str, int]:
    """Waiting messages per queue (all priority lists together)."""
    return {q: sum(lists.values()) for q, lists in queue_depths(settings).items()}
