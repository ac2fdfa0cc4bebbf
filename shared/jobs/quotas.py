"""Per-tenant budgets, checked before anything is queued or stored.

The limits (defaults ``Settings.quota_*``, per tenant ``tenant_limits`` via
``stylefarm tenants set-limits``; costs in reference GPU-seconds, ``shared.jobs.cost``):

- ``max_queued_jobs``: jobs waiting in the queue;
- ``max_jobs_in_flight``: jobs queued or running (the tenant's concurrent jobs);
- ``max_cost_in_flight``: the sum of the estimated costs of those jobs;
- ``max_job_cost``: the estimated cost of one job;
- ``max_upload_bytes_per_day``: bytes of new inputs stored in any 24 hours (a rolling window,
  so ``Retry-After`` can say exactly when enough bytes age out; re-uploading bytes the tenant
  already has costs nothing).

Over a budget that frees up with time the answer is ``QuotaExceeded`` (429, ``Retry-After``,
the problem names the limit, its value, the usage and what was asked). A job that could
never fit (its cost is above ``max_job_cost``, or above ``max_cost_in_flight`` with nothing in
flight) is ``JobTooExpensive`` (422): waiting would not help.

Race safety: ``admit_job`` runs inside the transaction that inserts the job
(``shared.jobs.store.create_job(admit=...)``), after taking a per-tenant lock: on PostgreSQL a
transaction-scoped advisory lock on the tenant, on SQLite the database's write lock (taken
first, by a no-op UPDATE). Two concurrent submissions of one tenant are therefore counted one
after the other and can never both take the last slot; other tenants never wait on it. The
upload check is not in the insert's transaction (the bytes go to storage in between): parallel
uploads can overshoot the daily budget by at most the uploads in progress, each bounded by
``Settings.max_upload_bytes``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.db.orm import Input, Job, TenantLimits, utcnow
from shared.db.session import session_scope
from shared.errors import JobTooExpensive, QuotaExceeded
from shared.jobs.status import JobStatus
from shared.jobs.tenants import LIMIT_DEFAULTS
from shared.settings import Settings

UPLOAD_WINDOW = timedelta(hours=24)
#: A fanned-out parent waiting for its pieces or for its assembly is in flight (counted as
#: running); its child jobs are not counted: the parent's cost covers them.
IN_FLIGHT = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.WAITING.value, JobStatus.ASSEMBLING.value)


@dataclass(frozen=True)
class Limits:
    """A tenant's effective budgets (its overrides, else the Settings defaults)."""

    max_queued_jobs: int
    max_jobs_in_flight: int
    max_cost_in_flight: float
    max_job_cost: float
    max_upload_bytes_per_day: int


@dataclass(frozen=True)
class JobUsage:
    """What a tenant has in flight now."""

    queued: int
    running: int
    cost_in_flight: float

    @property
    def in_flight(self) -> int:
        return self.queued + self.running


def effective_limits(session: Session, tenant: str, settings: Settings) -> Limits:
    row = session.get(TenantLimits, tenant)
    values: dict[str, Any] = {}
    for name, setting in LIMIT_DEFAULTS.items():
        override = getattr(row, name) if row is not None else None
        values[name] = override if override is not None else getattr(settings, setting)
    return Limits(**values)


def job_usage(session: Session, tenant: str) -> JobUsage:
    rows = session.execute(
        select(Job.status, func.count(), func.coalesce(func.sum(Job.estimated_cost), 0.0))
        .where(Job.tenant == tenant, Job.status.in_(IN_FLIGHT), Job.parent_id.is_(None))
        .group_by(Job.status)
    ).all()
    counts = {status: (int(n), float(cost)) for status, n, cost in rows}
    queued = counts.get(JobStatus.QUEUED.value, (0, 0.0))
    running = [counts.get(s, (0, 0.0)) for s in IN_FLIGHT if s != JobStatus.QUEUED.value]
    return JobUsage(queued=queued[0], running=sum(n for n, _ in running),
                    cost_in_flight=queued[1] + sum(c for _, c in running))


def lock_tenant(session: Session, tenant: str) -> None:
    """Serialize the admissions of ``tenant`` until this transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"stylefarm-quota:{tenant}".encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect == "sqlite":
        # A write statement first: the transaction takes SQLite's write lock now (waiting for the
        # busy timeout if another writer has it), so the counts below cannot go stale before the insert.
        session.execute(text("UPDATE tenant_limits SET tenant = tenant WHERE 1 = 0"))


def check_job_cost(limits: Limits, cost: float) -> None:
    """``JobTooExpensive`` when a job of ``cost`` could never be admitted under ``limits``."""
    for name, value in (("max_job_cost", limits.max_job_cost), ("max_cost_in_flight", limits.max_cost_in_flight)):
        if cost > value:
            raise JobTooExpensive(
                f"The job's estimated cost is {cost:.1f} reference GPU-seconds, above the tenant's limit "
                f"{name} = {value:g}; ask for less (a smaller size, fewer steps or styles).",
                limit=name, limit_value=value, requested=round(cost, 3),
            )


def _exceeded(limit: str, value: float, usage: float, requested: float, what: str, settings: Settings) -> QuotaExceeded:
    return QuotaExceeded(
        f"The tenant has {what}; the limit {limit} is {value:g}. Wait for jobs to finish (or cancel some) "
        f"and try again.",
        retry_after_s=settings.quota_retry_after_s, limit=limit, limit_value=value, usage=usage, requested=requested,
    )


def admit_job(session: Session, tenant: str, cost: float, settings: Settings) -> None:
    """Raise ``JobTooExpensive`` or ``QuotaExceeded`` unless one more job of ``cost`` fits the
    tenant's budgets. Call it inside the transaction that inserts the job (it takes the
    tenant's lock until that transaction ends)."""
    lock_tenant(session, tenant)
    limits = effective_limits(session, tenant, settings)
    check_job_cost(limits, cost)
    usage = job_usage(session, tenant)
    if usage.queued + 1 > limits.max_queued_jobs:
        raise _exceeded("max_queued_jobs", limits.max_queued_jobs, usage.queued, 1,
                        f"{usage.queued} queued jobs", settings)
    if usage.in_flight + 1 > limits.max_jobs_in_flight:
        raise _exceeded("max_jobs_in_flight", limits.max_jobs_in_flight, usage.in_flight, 1,
                        f"{usage.in_flight} jobs queued or running", settings)
    if usage.cost_in_flight + cost > limits.max_cost_in_flight:
        raise _exceeded("max_cost_in_flight", limits.max_cost_in_flight, round(usage.cost_in_flight, 3),
                        round(cost, 3), f"{usage.cost_in_flight:.1f} reference GPU-seconds of jobs in flight "
                        f"and this job adds {cost:.1f}", settings)


def upload_usage(session: Session, tenant: str, now: datetime) -> int:
    """Bytes of new inputs ``tenant`` stored in the 24 hours before ``now``."""
    used = session.scalar(
        select(func.coalesce(func.sum(Input.size), 0))
        .where(Input.tenant == tenant, Input.created_at > now - UPLOAD_WINDOW)
    )
    return int(used or 0)


def check_upload(tenant: str, size: int, settings: Settings, now: datetime | None = None) -> None:
    """Raise ``QuotaExceeded`` when storing ``size`` more bytes would pass the daily budget;
    ``Retry-After`` is when enough of the window's bytes age out."""
    now = now or utcnow()
    with session_scope() as session:
        limit = effective_limits(session, tenant, settings).max_upload_bytes_per_day
        used = upload_usage(session, tenant, now)
        if used + size <= limit:
            return
        retry_at = now + UPLOAD_WINDOW  # when the upload alone is above the limit: a day
        if size <= limit:
            freed, need = 0, used + size - limit
            rows = session.execute(
                select(Input.created_at, Input.size)
                .where(Input.tenant == tenant, Input.created_at > now - UPLOAD_WINDOW)
                .order_by(Input.created_at)
            )
            for created_at, row_size in rows:
                freed += row_size
                if freed >= need:
                    retry_at = created_at + UPLOAD_WINDOW
                    break
    retry_after = max(1, int((retry_at - now).total_seconds()) + 1)
    raise QuotaExceeded(
        f"The tenant stored {used} bytes of new inputs in the last 24 hours and this upload adds {size}; "
        f"the limit max_upload_bytes_per_day is {limit}. Try again in {retry_after} s.",
        retry_after_s=retry_after, limit="max_upload_bytes_per_day", limit_value=limit, usage=used, requested=size,
    )


def tenant_report(tenant: str, settings: Settings) -> dict[str, Any]:
    """Effective limits and current usage of ``tenant`` (for ``stylefarm tenants show``)."""
    with session_scope() as session:
        limits = effective_limits(session, tenant, settings)
        jobs = job_usage(session, tenant)
        uploaded = upload_usage(session, tenant, utcnow())
    return {
        "tenant": tenant,
        "limits": limits.__dict__,
        "usage": {"queued_jobs": jobs.queued, "running_jobs": jobs.running, "jobs_in_flight": jobs.in_flight,
                  "cost_in_flight": round(jobs.cost_in_flight, 3), "upload_bytes_last_24h": uploaded},
    }
