"""The one Celery configuration of stylefarm, shared by the API's client app and the workers.

State lives in SQL, not in Celery: there is no result backend, tasks are sent by name
(``RUN_JOB_TASK_NAME``) with a single JSON argument, the job id. Delivery is
at-least-once: ``task_acks_late`` + ``task_reject_on_worker_lost`` put a message back on
the queue when the worker process running it dies, and ``shared.jobs.store.claim_job``
lets a message through only for a queued job: a redelivered one finds its job running
under a live lease (or finished) and is dropped. Jobs whose worker died are requeued by
the sweeper when their lease expires (``worker.sweeper``).

Time limits are per method (``shared.jobs.methods.REGISTRY``): each message carries its
method's soft/hard limits (``shared.broker.client.enqueue_job``), the defaults below are the
widest. The Redis visibility timeout (``Settings.visibility_timeout_s``) should stay above the
longest hard time limit: a message still unacknowledged after it is delivered again, to a
second worker (which drops it: its job is running under a live lease). Unacknowledged
messages older than the timeout are looked for every ``unacked_restore_interval`` seconds.

Priorities: ``enqueue_job(..., priority=p)`` takes 0 (normal, the default) to 9 (most
urgent). Kombu's Redis transport serves *lower* numbers first, so the message priority is
``9 - p``. There is one priority step per level (``PRIORITY_STEPS`` = 0..9), so every level
is its own Redis list, named ``<queue>`` (step 0, priority 9) or ``<queue>:<step>`` (see
``queue_list_names``, ``priority_list_name``): a worker takes the most urgent waiting
message first and, within one level, the oldest (``shared.jobs.queue_stats`` counts a
queued job's position by the same rule). The KEDA manifest (``deploy/k8s``) scales on
exactly these lists (``tests/test_deploy_manifests.py``).
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from shared.jobs.methods import MAX_HARD_LIMIT_S, MAX_SOFT_LIMIT_S, REGISTRY
from shared.settings import Settings, get_settings

#: The wire names of the tasks (``worker.tasks.execute_job``, ``worker.sweeper.sweep_task``):
#: keep them stable, messages already queued carry them.
RUN_JOB_TASK_NAME = "stylefarm.run_job"
RECONCILE_TASK_NAME = "stylefarm.reconcile"
QUEUES = ("gpu", "cpu")
# Kombu priority steps (lower = served first), one per priority level, so that no two levels
# share a list. Normal jobs (priority 0) land on step 9. (Kombu's default has 4 steps: 0, 3, 6, 9;
# those lists are among these, so messages sent under the default are still consumed.)
PRIORITY_STEPS = tuple(range(10))
PRIORITY_SEP = ":"
MAX_PRIORITY = 9

_unserved = sorted({m.queue for m in REGISTRY.values()} - set(QUEUES))
if _unserved:  # a method sent to a queue no worker consumes would wait forever
    raise ValueError(f"method registry names queues {_unserved} that are not among QUEUES {QUEUES}")


def kombu_priority(priority: int) -> int:
    """stylefarm priority (0 normal .. 9 urgent) -> kombu Redis priority (0 served first)."""
    p = max(0, min(MAX_PRIORITY, int(priority)))
    return MAX_PRIORITY - p


def _list_name(queue: str, step: int) -> str:
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"


def queue_list_names(queue: str) -> list[str]:
    """The Redis list keys holding waiting messages of ``queue``, most urgent first (for
    monitoring/autoscaling)."""
    return [_list_name(queue, step) for step in PRIORITY_STEPS]


def priority_list_name(queue: str, priority: int) -> str:
    """The Redis list a job of stylefarm ``priority`` waits in on ``queue`` (kombu's rule:
    the largest step not above the message priority)."""
    kombu = kombu_priority(priority)
    return _list_name(queue, max(step for step in PRIORITY_STEPS if step <= kombu))


def celery_config(settings: Settings | None = None) -> dict[str, Any]:
    """The Celery settings dict (``app.conf.update(**celery_config())``)."""
    s = settings or get_settings()
    exchange = Exchange("stylefarm", type="direct")
    return {
        "broker_url": s.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4,
        "broker_transport_options": {
            "visibility_timeout": s.visibility_timeout_s,
            # look for messages past their visibility timeout every few seconds (at most 10)
            "unacked_restore_interval": max(1, min(10, s.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            "queue_order_strategy": "priority",
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEP,
            "socket_connect_timeout": 3,
            "socket_timeout": 30,
            "health_check_interval": 25,
        },
        # no result backend: job state lives in SQL
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        # JSON only, on both sides
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # at-least-once delivery, one job at a time per worker process
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_max_tasks_per_child": None,
        # pool processes migrate and pick the device on start; on a loaded machine that
        # takes longer than Celery's default 4 s before it kills them as hung
        "worker_proc_alive_timeout": 60.0,
        # queues
        "task_queues": tuple(
            Queue(name, exchange, routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY})
            for name in QUEUES
        ),
        "task_default_queue": "gpu",
        "task_default_exchange": "stylefarm",
        "task_default_routing_key": "gpu",
        "task_default_priority": kombu_priority(0),
        "task_create_missing_queues": False,
        # the widest limits; the task narrows them per method
        "task_soft_time_limit": MAX_SOFT_LIMIT_S,
        "task_time_limit": MAX_HARD_LIMIT_S,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
