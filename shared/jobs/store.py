"""The ONE module that writes job status (``JobStatus`` and ``TRANSITIONS`` live in ``shared.jobs.status``).

Job life cycle: the diagram and the table (``TRANSITIONS``, ``GUARDS``) are in
``shared.jobs.status``; every status write here goes through ``_write_status``, which
builds its condition from them.

Every transition is ONE conditional ``UPDATE jobs SET status = :target ... WHERE id = :id
AND (status = :source AND <its guard> OR ...)`` over the table's sources of the target, and
its rowcount decides who won. Two workers racing to claim or to finish
the same job therefore can never both succeed: the loser gets ``None`` from
``claim_job`` or ``InvalidTransition`` (409) from the finishing functions.

Each function opens its own short session (``session_scope``), so workers can call them
from progress callbacks on any thread. Returned ORM objects are detached snapshots.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.orm import Job, new_id, utcnow
from shared.db.session import session_scope
from shared.errors import (
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidTransition,
    NotFound,
)
from shared.jobs.methods import get_method, parse_spec
from shared.jobs.status import GUARDS, Guard, JobStatus, sources_of
from shared.jobs.tenants import check_tenant
from shared.webhooks.state import WebhookState

MAX_LIST_LIMIT = 200

#: The SQL of each named guard of ``shared.jobs.status.GUARDS``; ``task_id`` is the Celery
#: task asking for the transition.
GUARD_SQL: dict[Guard, Callable[[str | None], ColumnElement[bool]]] = {
    Guard.NEVER_RAN: lambda task_id: Job.attempts == 0,
    Guard.SAME_TASK: lambda task_id: Job.task_id == task_id if task_id is not None else false(),
}


def allowed_condition(
    target: JobStatus, *, only_from: Collection[JobStatus] | None = None, task_id: str | None = None
) -> ColumnElement[bool]:
    """SQL for "the job may become ``target`` now": its status is one of the sources of
    ``target`` in ``TRANSITIONS`` (narrowed to ``only_from`` when one store function does
    only some of them), each ANDed with its guard from ``GUARDS``."""
    sources = sources_of(target)
    if only_from is not None:
        if not set(only_from) <= set(sources):
            raise ValueError(f"{sorted(set(only_from) - set(sources))} -> {target} is not in TRANSITIONS")
        sources = tuple(s for s in sources if s in only_from)
    clauses = []
    for source in sources:
        guard = GUARDS.get((source, target))
        in_source = Job.status == source.value
        clauses.append(and_(in_source, GUARD_SQL[guard](task_id)) if guard is not None else in_source)
    return or_(*clauses)


def _write_status(
    session: Session,
    job_id: str,
    target: JobStatus,
    values: Mapping[str, Any],
    *,
    only_from: Collection[JobStatus] | None = None,
    task_id: str | None = None,
    held_by_task: bool = False,
) -> bool:
    """The one status write: ``UPDATE jobs SET status = target, **values WHERE id = job_id AND
    <allowed_condition>`` (and, with ``held_by_task``, the job is held by ``task_id``).
    True when this call made the transition."""
    conditions = [Job.id == job_id, allowed_condition(target, only_from=only_from, task_id=task_id)]
    if held_by_task and task_id is not None:
        conditions.append(Job.task_id == task_id)
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(*conditions)
            .values(status=target.value, revision=Job.revision + 1, **{"updated_at": utcnow(), **values})
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


# --- helpers ---------------------------------------------------------------------------


def request_hash_of(body: Mapping[str, Any]) -> str:
    """sha256 of a JSON body in canonical form (sorted keys, no whitespace)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _spec_dict(spec: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A validated spec as stored JSON; defaults are filled in, so a job never changes
    meaning when a default in ``shared.jobs.specs`` changes later."""
    model = spec if isinstance(spec, BaseModel) else parse_spec(dict(spec))
    return model.model_dump(mode="json")


def _load(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.", job_id=job_id)
    return job


def _transition(
    job_id: str,
    target: JobStatus,
    values: dict[str, Any],
    *,
    only_from: Collection[JobStatus] | None = None,
    task_id: str | None = None,
) -> Job:
    """Apply ``target`` with one conditional UPDATE (``_write_status``); raise
    ``InvalidTransition`` if the job was not in an allowed source status or its guard did not
    hold (or, with ``task_id``, it is held by another task)."""
    with session_scope() as session:
        done = _write_status(session, job_id, target, values, only_from=only_from, task_id=task_id, held_by_task=True)
        job = _load(session, job_id)
        if not done:
            held = " (held by another task)" if task_id is not None and job.task_id != task_id else ""
            raise InvalidTransition(
                f"Job {job_id} is {job.status}{held}; it cannot become {target.value}.",
                job_id=job_id,
                job_status=job.status,
            )
        return job


# --- jobs ------------------------------------------------------------------------------


def create_job(
    tenant: str,
    spec: BaseModel | Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    priority: int = 0,
    queue: str | None = None,
    parent_id: str | None = None,
    estimated_cost: float = 0.0,
    admit: Callable[[Session], None] | None = None,
    webhook_url: str | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job; returns ``(job, created)``.

    With an ``idempotency_key``: if the tenant already has a job under that key with the
    same ``request_hash`` (default: hash of the normalized spec), that job is returned with
    ``created=False``; with a different hash ``IdempotencyKeyReused`` (422) is raised.

    ``admit(session)`` runs in the inserting transaction just before the insert (the tenant's
    budget check, ``shared.jobs.quotas.admit_job``); whatever it raises, nothing is written.
    A replay of an existing job is not admitted again.
    A ``webhook_url`` (already checked, ``shared.webhooks.destinations``) gets the job's
    final-status event.
    """
    check_tenant(tenant)
    spec_json = _spec_dict(spec)
    method = spec_json["method"]
    request_hash = request_hash or request_hash_of(spec_json)

    def existing(session: Session) -> Job | None:
        if idempotency_key is None:
            return None
        job = session.scalars(
            select(Job).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key)
        ).one_or_none()
        if job is not None and job.request_hash != request_hash:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency_key!r} was already used for a different request "
                f"(job {job.id}); use a new key for a new job.",
                job_id=job.id,
            )
        return job

    with session_scope() as session:
        found = existing(session)
        if found is not None:
            return found, False
    now = utcnow()
    job = Job(
        id=new_id(),
        tenant=tenant,
        method=method,
        spec=spec_json,
        status=JobStatus.QUEUED.value,
        queue=queue or get_method(method).queue,
        priority=priority,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        progress=0.0,
        step=0,
        total=0,
        stage="",
        attempts=0,
        cancel_requested=False,
        parent_id=parent_id,
        webhook_url=webhook_url,
        webhook_state=WebhookState.PENDING.value if webhook_url else None,
        created_at=now,
        updated_at=now,
        estimated_cost=estimated_cost,
    )
    try:
        with session_scope() as session:
            if admit is not None:
                admit(session)
            session.add(job)
        return job, True
    except IntegrityError:
        # Lost a race with an identical retry: the unique (tenant, idempotency_key) decides.
        if idempotency_key is None:
            raise
        with session_scope() as session:
            found = existing(session)
            if found is None:
                raise
            return found, False


def get_job(job_id: str, tenant: str | None = None) -> Job:
    """The job, or ``NotFound``; with ``tenant`` another tenant's job is also NotFound."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"No job with id {job_id!r}.", job_id=job_id)
        return job


def job_revision(job_id: str) -> int | None:
    """The job's ``revision`` (+1 on every write of its row), None when there is no such job:
    one primary-key read, for pollers that fetch the whole row only when it moved."""
    with session_scope() as session:
        return session.scalar(select(Job.revision).where(Job.id == job_id))


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; raises ``InvalidCursor`` (400) on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if not isinstance(job_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor fields")
        return when, job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor(
            "The cursor is not one this API returned; pass next_cursor from the previous page unchanged."
        ) from None


def list_jobs(
    tenant: str,
    status: str | None = None,
    method: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """The tenant's jobs, newest first, ``limit`` at a time; returns ``(jobs, next_cursor)``.

    Pages are keyed on ``(created_at, id)`` so inserts never shift or repeat items.
    ``next_cursor`` is ``None`` on the last page.
    """
    limit = max(1, min(int(limit), MAX_LIST_LIMIT))
    query = select(Job).where(Job.tenant == tenant)
    if status is not None:
        query = query.where(Job.status == JobStatus(status).value)
    if method is not None:
        query = query.where(Job.method == method)
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    with session_scope() as session:
        jobs = list(session.scalars(query))
    next_cursor = None
    if len(jobs) > limit:
        jobs = jobs[:limit]
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id)
    return jobs, next_cursor


def claim_job(job_id: str, *, task_id: str, worker: str) -> Job | None:
    """queued -> running (attempts + 1), or running -> running when the job is already held
    by this same Celery ``task_id`` (redelivery after its worker died).

    Returns the running job, or ``None`` when it is canceled, finished, missing or held by
    another task; the caller then simply drops the message.
    """
    now = utcnow()
    values = {"attempts": Job.attempts + 1, "task_id": task_id, "worker": worker, "started_at": now, "updated_at": now}
    with session_scope() as session:
        if not _write_status(session, job_id, JobStatus.RUNNING, values, task_id=task_id):
            return None
        return _load(session, job_id)


def record_progress(
    job_id: str, *, step: int, total: int, loss: float | None = None, stage: str = "", preview: bool = False
) -> bool:
    """Store progress of a running job and bump its heartbeat (``updated_at``);
    ``preview=True`` says a new preview image was just uploaded (``preview_version`` + 1).

    Returns True when the worker should stop: cancel was requested, or the job is no
    longer running (finished or taken away), so its work would be thrown away anyway.
    """
    fraction = min(1.0, max(0.0, step / total)) if total > 0 else 0.0
    if loss is not None and not math.isfinite(loss):
        loss = None  # NaN/inf are not JSON; the API would choke on them
    values: dict[str, Any] = {"step": step, "total": total, "progress": fraction, "loss": loss, "stage": stage[:64]}
    if preview:
        values["preview_version"] = Job.preview_version + 1
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
            .values(**values, updated_at=utcnow(), revision=Job.revision + 1)
            .execution_options(synchronize_session=False)
        )
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return True
    return bool(row.cancel_requested) or row.status != JobStatus.RUNNING.value


def is_cancel_requested(job_id: str) -> bool:
    """True when a cancel was requested (or the job is already canceled / gone)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return True
    return bool(row.cancel_requested) or row.status == JobStatus.CANCELED.value


def succeed_job(
    job_id: str, result: dict[str, Any], model_id: str | None = None, *, task_id: str | None = None
) -> Job:
    """running -> succeeded with ``result``, a ``shared.jobs.outcomes`` outcome as JSON
    (``outcome.model_dump(mode="json")``, read back with ``parse_outcome``) and, for
    training jobs, the registered ``model_id``."""
    now = utcnow()
    return _transition(
        job_id,
        JobStatus.SUCCEEDED,
        {"result": result, "model_id": model_id, "error": None, "progress": 1.0, "stage": "done", "finished_at": now},
        task_id=task_id,
    )


def fail_job(job_id: str, problem: dict[str, Any], *, task_id: str | None = None) -> Job:
    """running -> failed with ``problem`` (RFC 9457 dict, e.g. ``err.to_problem()``).

    Also queued -> failed, but only for a job that never ran (``attempts == 0``), e.g. one
    that cannot be started at all. A requeued job waiting for its retry cannot be failed
    by a stale worker that lost it.
    """
    return _transition(job_id, JobStatus.FAILED, {"error": problem, "finished_at": utcnow()}, task_id=task_id)


def mark_canceled(job_id: str, *, task_id: str | None = None) -> Job:
    """running -> canceled, by the worker after it saw ``cancel_requested``."""
    return _transition(
        job_id,
        JobStatus.CANCELED,
        {"finished_at": utcnow(), "stage": "canceled"},
        only_from=[JobStatus.RUNNING],  # queued -> canceled is request_cancel's
        task_id=task_id,
    )


def requeue_job(job_id: str, problem: dict[str, Any] | None = None, *, task_id: str | None = None) -> Job:
    """running -> queued for a retry; ``problem`` records why the last attempt stopped.

    The worker slot is cleared; ``task_id`` stays (Celery retries reuse the task id).
    """
    return _transition(
        job_id,
        JobStatus.QUEUED,
        {"error": problem, "worker": None, "stage": "requeued"},
        task_id=task_id,
    )


def request_cancel(job_id: str, tenant: str | None) -> Job:
    """Cancel on behalf of a user: queued -> canceled at once; running -> cancel_requested;
    already canceled -> returned as is; succeeded/failed -> ``InvalidTransition`` (409)."""
    for _ in range(3):  # the status may change between our two conditional UPDATEs
        job = get_job(job_id, tenant)
        now = utcnow()
        with session_scope() as session:
            values = {"cancel_requested": True, "finished_at": now, "updated_at": now, "stage": "canceled"}
            if not _write_status(session, job_id, JobStatus.CANCELED, values, only_from=[JobStatus.QUEUED]):
                # running: not a status write; the worker sees the flag and calls mark_canceled
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                    .values(cancel_requested=True, updated_at=now, revision=Job.revision + 1)
                    .execution_options(synchronize_session=False)
                )
            job = _load(session, job_id)
        if job.status == JobStatus.CANCELED.value or (
            job.status == JobStatus.RUNNING.value and job.cancel_requested
        ):
            return job
        if job.status in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value):
            raise InvalidTransition(
                f"Job {job_id} already {job.status}; a finished job cannot be canceled.",
                job_id=job_id,
                job_status=job.status,
            )
    raise InvalidTransition(f"Job {job_id} changed status while canceling; try again.", job_id=job_id)


