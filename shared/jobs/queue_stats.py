"""Read-only numbers about the queues, from SQL: a queued job's place in line, how many jobs
wait and run on each queue, how long a method's jobs recently took; and the start-time
estimate built from them and the live workers (``shared.broker.fleet``).

The order is the broker's (``shared.broker.celery_config``): every priority level has its own
Redis list and a worker takes the most urgent waiting message first, the oldest first within
one level. So the jobs ahead of a queued job are the queued jobs of its queue with a higher
priority, or the same priority and created before it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, literal, or_, select
from sqlalchemy.orm import aliased

from shared.db.orm import Job
from shared.db.session import default_url, session_scope
from shared.jobs.status import JobStatus

#: The recent mean duration of a method is the mean run time of its last RECENT_SAMPLE
#: succeeded jobs, recomputed at most every MEAN_CACHE_S seconds per process.
RECENT_SAMPLE = 20
MEAN_CACHE_S = 30.0

_means: dict[tuple[str, str], tuple[float, float | None]] = {}
_means_lock = threading.Lock()


def _ahead(other: Any, job: Any) -> ColumnElement[bool]:
    """``other`` is taken before ``job`` within one queue: a higher priority, or the same
    priority and created before it (the id breaks ties)."""
    return or_(
        other.priority > job.priority,
        and_(
            other.priority == job.priority,
            or_(other.created_at < job.created_at, and_(other.created_at == job.created_at, other.id < job.id)),
        ),
    )


def position_column() -> ScalarSelect[int]:
    """A queued job's position, how many queued jobs of its queue a worker takes before it,
    as a column of a statement that selects ``Job`` (correlated to its row): read with the job
    in one round trip (``shared.jobs.store.read_job``). Meant for a queued job; wrap it in a
    ``CASE`` on the status so other jobs do not pay for the count."""
    other = aliased(Job)
    # the status as a literal, so the planner can use the partial index on queued jobs
    # (ix_jobs_queued_order) even in a prepared statement's generic plan
    return (
        select(func.count())
        .select_from(other)
        .where(other.status == literal(JobStatus.QUEUED.value, literal_execute=True),
               other.queue == Job.queue, other.id != Job.id, _ahead(other, Job))
        .correlate(Job)
        .scalar_subquery()
    )


def counts_by_queue() -> dict[str, dict[str, int]]:
    """``{queue: {"queued": n, "running": m}}`` over every tenant (queues with neither are absent)."""
    out: dict[str, dict[str, int]] = {}
    with session_scope() as session:
        rows = session.execute(
            select(Job.queue, Job.status, func.count())
            .where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            .group_by(Job.queue, Job.status)
        ).all()
    for queue, status, count in rows:
        out.setdefault(queue, {"queued": 0, "running": 0})[status] = int(count)
    return out


def jobs_of_tenant(tenant: str, job_ids: list[str]) -> set[str]:
    """Which of ``job_ids`` belong to ``tenant``."""
    with session_scope() as session:
        return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.tenant == tenant)))


def recent_mean_duration_s(method: str) -> float | None:
    """Mean run time (started -> finished) of the method's last ``RECENT_SAMPLE`` succeeded
    jobs; ``None`` before the first one."""
    now = time.monotonic()
    key = (default_url(), method)
    with _means_lock:
        cached = _means.get(key)
        if cached is not None and now - cached[0] < MEAN_CACHE_S:
            return cached[1]
    with session_scope() as session:
        rows = session.execute(
            select(Job.started_at, Job.finished_at)
            .where(
                Job.method == method,
                Job.status == JobStatus.SUCCEEDED.value,
                Job.started_at.is_not(None),
                Job.finished_at.is_not(None),
            )
            .order_by(Job.finished_at.desc())
            .limit(RECENT_SAMPLE)
        ).all()
    durations = [max(0.0, (end - start).total_seconds()) for start, end in rows if start and end]
    mean = sum(durations) / len(durations) if durations else None
    with _means_lock:
        _means[key] = (now, mean)
    return mean


def forget_means() -> None:
    """Drop the cached means (tests; a process that changes databases)."""
    with _means_lock:
        _means.clear()


def estimate_start_s(position: int, workers: int, idle_workers: int, mean_duration_s: float | None) -> float | None:
    """Seconds until a queued job with ``position`` jobs ahead starts, given ``workers`` live
    workers on its queue of which ``idle_workers`` run nothing, each job taking about
    ``mean_duration_s``: 0 when an idle worker is left for it, else one mean duration for
    every round of ``workers`` jobs that must finish first. ``None`` when unknown (no live
    worker consumes the queue, or the method has no history yet and the job must wait)."""
    if workers <= 0:
        return None
    waiting_for = position + 1 - max(0, idle_workers)  # jobs that must finish before ours starts
    if waiting_for <= 0:
        return 0.0
    if mean_duration_s is None:
        return None
    return round(math.ceil(waiting_for / workers) * mean_duration_s, 1)
