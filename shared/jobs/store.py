"""The ONE module that writes job status (``JobStatus`` and ``TRANSITIONS`` live in ``shared.jobs.status``).

Job life cycle: the diagram and the table (``TRANSITIONS``, ``GUARDS``) are in
``shared.jobs.status``; every status write here goes through ``_write_status``, which
builds its condition from them.

Every transition is ONE conditional ``UPDATE jobs SET status = :target ... WHERE id = :id
AND (status = :source AND <its guard> OR ...)`` over the table's sources of the target, and
its rowcount decides who won. Two workers racing to claim or to finish
the same job therefore can never both succeed: the loser gets ``None`` from
``claim_job`` or ``InvalidTransition`` (409) from the finishing functions.

Leases with fencing. ``claim_job`` increments ``fencing_token`` and sets
``lease_expires_at = now + Settings.lease_ttl_s`` in the same UPDATE; the returned job carries
the token. The holder renews its lease (``renew_lease``, and every ``record_progress``), and
every later write of the holder (progress, cancel acknowledgement, result, failure, requeue,
the checks before it uploads a checkpoint or a result) names its token: a write whose token
is no longer the job's, or whose job is no longer running, changes nothing and raises
``LeaseLost``. So a worker that was only cut off, and whose job the sweeper requeued and
another worker claimed, cannot overwrite the new holder's work. ``expire_lease`` is the
sweeper's write: it takes a running job back only if its lease expired and it still has the
token the sweeper read.

One attempt budget. ``attempts`` counts claims; a claim is refused past
``Settings.max_attempts`` and ``requeue_job`` / ``expire_lease`` (whoever hands a job back: the
worker's retry of a transient error, graceful leave, the sweeper) fail a job whose budget is
spent instead of queueing it again.

Lease times are the writers' clocks (UTC): the machines' clocks must agree to well within
``lease_ttl_s - lease_renew_s`` (NTP does).

Each function opens its own short session (``session_scope``), so workers can call them
from progress callbacks on any thread. Returned ORM objects are detached snapshots.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, and_, bindparam, case, exists, false, func, or_, select, true, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from shared.db.orm import Job, new_id, utcnow
from shared.db.session import read_scope, session_scope
from shared.errors import (
    EngineError,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidTransition,
    LeaseLost,
    NotFound,
    PieceFailed,
)
from shared.jobs import queue_stats
from shared.jobs.methods import get_method, parse_spec
from shared.jobs.status import GUARDS, Guard, JobStatus, sources_of
from shared.jobs.tenants import check_tenant
from shared.settings import get_settings
from shared.webhooks.state import WebhookState

MAX_LIST_LIMIT = 200



@dataclass(frozen=True)
class GuardArgs:
    """What a guard's SQL may need from the writer: its fencing token, the attempt budget."""

    token: int | None = None
    max_attempts: int | None = None

    def budget(self) -> int:
        return self.max_attempts if self.max_attempts is not None else get_settings().max_attempts


_Child = aliased(Job, name="child")
#: A child job ended without a result: its parent cannot be put together.
CHILD_LOST_STATUSES = (JobStatus.FAILED.value, JobStatus.CANCELED.value)


def _children_succeeded() -> ColumnElement[bool]:
    """The job has children and every one succeeded (correlated subqueries on ``jobs``)."""
    has_children = exists().where(_Child.parent_id == Job.id)
    unfinished = exists().where(_Child.parent_id == Job.id, _Child.status != JobStatus.SUCCEEDED.value)
    return and_(has_children, ~unfinished)


def _child_failed() -> ColumnElement[bool]:
    return exists().where(_Child.parent_id == Job.id, _Child.status.in_(CHILD_LOST_STATUSES))


#: The SQL of each named guard of ``shared.jobs.status.GUARDS``.
GUARD_SQL: dict[Guard, Callable[[GuardArgs], ColumnElement[bool]]] = {
    Guard.WITHIN_BUDGET: lambda a: Job.attempts < a.budget(),
    Guard.FENCED: lambda a: Job.fencing_token == a.token if a.token is not None else false(),
    Guard.NEVER_RAN_OR_SPENT: lambda a: or_(Job.attempts == 0, Job.attempts >= a.budget()),
    Guard.CHILDREN_SUCCEEDED: lambda a: _children_succeeded(),
    Guard.CHILD_FAILED: lambda a: _child_failed(),
}


def allowed_condition(
    target: JobStatus, *, only_from: Collection[JobStatus] | None = None, args: GuardArgs | None = None
) -> ColumnElement[bool]:
    """SQL for "the job may become ``target`` now": its status is one of the sources of
    ``target`` in ``TRANSITIONS`` (narrowed to ``only_from`` when one store function does
    only some of them), each ANDed with its guard from ``GUARDS``."""
    sources = sources_of(target)
    if only_from is not None:
        if not set(only_from) <= set(sources):
            raise ValueError(f"{sorted(set(only_from) - set(sources))} -> {target} is not in TRANSITIONS")
        sources = tuple(s for s in sources if s in only_from)
    args = args or GuardArgs()
    clauses = []
    for source in sources:
        guard = GUARDS.get((source, target))
        in_source = Job.status == source.value
        clauses.append(and_(in_source, GUARD_SQL[guard](args)) if guard is not None else in_source)
    return or_(*clauses)


def _write_status(
    session: Session,
    job_id: str,
    target: JobStatus,
    values: Mapping[str, Any],
    *,
    only_from: Collection[JobStatus] | None = None,
    args: GuardArgs | None = None,
    also: ColumnElement[bool] | None = None,
) -> bool:
    """The one status write: ``UPDATE jobs SET status = target, **values WHERE id = job_id AND
    <allowed_condition> [AND also]``. True when this call made the transition."""
    conditions = [Job.id == job_id, allowed_condition(target, only_from=only_from, args=args)]
    if also is not None:
        conditions.append(also)
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


def _lease_lost(job_id: str, token: int, job: Job | None) -> LeaseLost:
    if job is None:
        return LeaseLost(f"Job {job_id} no longer exists; the holder of token {token} must stop.", job_id=job_id)
    return LeaseLost(
        f"Job {job_id} is no longer held by token {token} (it is {job.status} under token {job.fencing_token}); "
        "the write was refused and the worker must stop.",
        job_id=job_id,
        job_status=job.status,
        fencing_token=job.fencing_token,
    )


def _holds(token: int) -> ColumnElement[bool]:
    """The job is running under the claim that took ``token``."""
    return and_(Job.status == JobStatus.RUNNING.value, Job.fencing_token == token)


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
    token: int | None = None,
) -> Job:
    """Apply ``target`` with one conditional UPDATE (``_write_status``); raise
    ``InvalidTransition`` if the job was not in an allowed source status or its guard did not
    hold, and ``LeaseLost`` when the writer's ``token`` no longer holds the running job."""
    with session_scope() as session:
        done = _write_status(session, job_id, target, values, only_from=only_from, args=GuardArgs(token=token))
        if not done and token is not None:
            lost = session.get(Job, job_id, populate_existing=True)
            if lost is None or lost.status != JobStatus.RUNNING.value or lost.fencing_token != token:
                raise _lease_lost(job_id, token, lost)
        job = _load(session, job_id)
        if not done:
            raise InvalidTransition(
                f"Job {job_id} is {job.status}; it cannot become {target.value}.",
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
    with read_scope() as session:
        job = session.get(Job, job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"No job with id {job_id!r}.", job_id=job_id)
        return job


def job_revision(job_id: str) -> int | None:
    """The job's ``revision`` (+1 on every write of its row), None when there is no such job:
    one primary-key read, for pollers that fetch the whole row only when it moved."""
    with read_scope() as session:
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
    *,
    include_children: bool = False,
    parent_id: str | None = None,
) -> tuple[list[Job], str | None]:
    """The tenant's jobs, newest first, ``limit`` at a time; returns ``(jobs, next_cursor)``.

    Pages are keyed on ``(created_at, id)`` so inserts never shift or repeat items.
    ``next_cursor`` is ``None`` on the last page. The pieces of fanned-out jobs (child jobs)
    are left out unless ``include_children``; ``parent_id`` lists only that job's children.
    """
    limit = max(1, min(int(limit), MAX_LIST_LIMIT))
    query = select(Job).where(Job.tenant == tenant)
    if parent_id is not None:
        query = query.where(Job.parent_id == parent_id)
    elif not include_children:
        query = query.where(Job.parent_id.is_(None))
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
    with read_scope() as session:
        jobs = list(session.scalars(query))
    next_cursor = None
    if len(jobs) > limit:
        jobs = jobs[:limit]
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id)
    return jobs, next_cursor


def claim_job(job_id: str, *, task_id: str, worker: str) -> Job | None:
    """queued (or assembling: a fanned-out parent whose pieces are all done) -> running:
    attempts + 1, a new fencing token, a lease of ``Settings.lease_ttl_s``.

    Returns the running job (its ``fencing_token`` is the caller's token for every later
    write), or ``None`` when it is running under another claim, finished, canceled or
    missing: the caller then drops the message. A queued job whose attempt budget is spent
    (``Settings.max_attempts`` lowered meanwhile) is failed here instead of run.
    """
    settings = get_settings()
    now = utcnow()
    values = {
        "attempts": Job.attempts + 1,
        "fencing_token": Job.fencing_token + 1,
        "lease_expires_at": now + timedelta(seconds=settings.lease_ttl_s),
        "task_id": task_id,
        "worker": worker,
        "started_at": now,
        "updated_at": now,
    }
    args = GuardArgs(max_attempts=settings.max_attempts)
    with session_scope() as session:
        if _write_status(session, job_id, JobStatus.RUNNING, values, args=args):
            return _load(session, job_id)
        spent = {
            "error": _budget_problem(job_id, settings.max_attempts, None),
            "finished_at": now,
            "stage": "failed",
        }
        budget_spent = and_(Job.attempts > 0, Job.attempts >= settings.max_attempts)
        _write_status(session, job_id, JobStatus.FAILED, spent, only_from=[JobStatus.QUEUED], args=args,
                      also=budget_spent)
        return None


def renew_lease(job_id: str, token: int) -> None:
    """Extend the holder's lease to ``now + Settings.lease_ttl_s``; ``LeaseLost`` when ``token``
    no longer holds the running job.

    The worker's heartbeat calls this every ``Settings.lease_renew_s`` (5 s) while a job runs:
    ONE UPDATE of one timestamp, found by primary key, no index on the column it writes (a
    PostgreSQL HOT update). A thousand busy workers make 1000 / 5 = 200 of these a second, a
    small load for one PostgreSQL; progress writes renew the lease too, at no extra cost.
    """
    expires = utcnow() + timedelta(seconds=get_settings().lease_ttl_s)
    with session_scope() as session:
        result = cast(
            CursorResult[Any],
            session.execute(
                update(Job)
                .where(Job.id == job_id, _holds(token))
                .values(lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            ),
        )
        if result.rowcount != 1:
            raise _lease_lost(job_id, token, session.get(Job, job_id))


def check_lease(job_id: str, token: int) -> None:
    """A read: ``LeaseLost`` unless ``token`` still holds the running job. The worker asks
    before it uploads a checkpoint or a result, so a stale holder does not overwrite the new
    holder's objects (what is left is the instant between this read and the upload)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.fencing_token).where(Job.id == job_id)).one_or_none()
        if row is None or row.status != JobStatus.RUNNING.value or row.fencing_token != token:
            raise _lease_lost(job_id, token, session.get(Job, job_id))


def record_progress(
    job_id: str, *, token: int, step: int, total: int, loss: float | None = None, stage: str = "",
    preview: bool = False,
) -> bool:
    """Store progress of the running job held by ``token``, bump its heartbeat (``updated_at``)
    and renew its lease, in one UPDATE; ``preview=True`` says a new preview image was just
    uploaded (``preview_version`` + 1).

    Returns True when the worker should stop because a cancel was requested; raises
    ``LeaseLost`` (and changes nothing) when ``token`` no longer holds the running job.
    """
    fraction = min(1.0, max(0.0, step / total)) if total > 0 else 0.0
    if loss is not None and not math.isfinite(loss):
        loss = None  # NaN/inf are not JSON; the API would choke on them
    now = utcnow()
    values: dict[str, Any] = {"step": step, "total": total, "progress": fraction, "loss": loss, "stage": stage[:64]}
    if preview:
        values["preview_version"] = Job.preview_version + 1
    lease = now + timedelta(seconds=get_settings().lease_ttl_s)
    with session_scope() as session:
        canceled = session.execute(
            update(Job)
            .where(Job.id == job_id, _holds(token))
            .values(**values, updated_at=now, revision=Job.revision + 1, lease_expires_at=lease)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if canceled is None:
            raise _lease_lost(job_id, token, session.get(Job, job_id))
    return bool(canceled)


def is_cancel_requested(job_id: str) -> bool:
    """True when a cancel was requested (or the job is already canceled / gone)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return True
    return bool(row.cancel_requested) or row.status == JobStatus.CANCELED.value


def succeed_job(job_id: str, result: dict[str, Any], model_id: str | None = None, *, token: int) -> Job:
    """running -> succeeded by the holder of ``token``, with ``result``, a ``shared.jobs.outcomes``
    outcome as JSON (``outcome.model_dump(mode="json")``, read back with ``parse_outcome``) and,
    for training jobs, the registered ``model_id``."""
    now = utcnow()
    values = {"result": result, "model_id": model_id, "error": None, "progress": 1.0, "stage": "done",
              "finished_at": now, "lease_expires_at": None}
    return _transition(job_id, JobStatus.SUCCEEDED, values, token=token)


def fail_job(job_id: str, problem: dict[str, Any], *, token: int | None = None) -> Job:
    """-> failed with ``problem`` (RFC 9457 dict, e.g. ``err.to_problem()``).

    With ``token``: running -> failed by the holder of that token (``LeaseLost`` otherwise).
    Without: queued -> failed, only for a job that never ran (e.g. one that cannot be started
    at all) or whose attempt budget is spent. A requeued job waiting for its retry cannot be
    failed by anyone else.
    """
    values = {"error": problem, "finished_at": utcnow(), "lease_expires_at": None}
    only_from = [JobStatus.RUNNING] if token is not None else [JobStatus.QUEUED]
    return _transition(job_id, JobStatus.FAILED, values, only_from=only_from, token=token)


def mark_canceled(job_id: str, *, token: int) -> Job:
    """running -> canceled, by the holder of ``token`` after it saw ``cancel_requested``."""
    values = {"finished_at": utcnow(), "stage": "canceled", "lease_expires_at": None}
    # queued -> canceled is request_cancel's
    return _transition(job_id, JobStatus.CANCELED, values, only_from=[JobStatus.RUNNING], token=token)


def _budget_problem(job_id: str, max_attempts: int, problem: dict[str, Any] | None) -> dict[str, Any]:
    """The last attempt's problem (or a generic one), saying the attempt budget is spent."""
    why = dict(problem or EngineError("the job may not run again.").to_problem())
    detail = str(why.get("detail", "")).rstrip(".")
    why["detail"] = f"{detail}. The job has used its attempt budget ({max_attempts} runs); giving up."
    why["instance"] = f"/v1/jobs/{job_id}"
    why["max_attempts"] = max_attempts
    why.pop("retryable", None)
    return why


def _release(job_id: str, problem: dict[str, Any] | None, stage: str, token: int,
             also: ColumnElement[bool] | None) -> Job | None:
    """running -> queued (or -> failed once the attempt budget is spent) for the claim of
    ``token``; the lease is released so another worker may claim the job at once. ``None``
    when the UPDATE found the job no longer so (the caller decides what that means)."""
    max_attempts = get_settings().max_attempts
    args = GuardArgs(token=token, max_attempts=max_attempts)
    released = {"worker": None, "lease_expires_at": None}
    with session_scope() as session:
        within = and_(Job.attempts < max_attempts, also if also is not None else true())
        if _write_status(session, job_id, JobStatus.QUEUED, {"error": problem, "stage": stage, **released},
                         args=args, also=within):
            return _load(session, job_id)
        spent = {"error": _budget_problem(job_id, max_attempts, problem), "stage": "failed", "finished_at": utcnow()}
        if _write_status(session, job_id, JobStatus.FAILED, {**spent, **released}, only_from=[JobStatus.RUNNING],
                         args=args, also=also):
            return _load(session, job_id)
        return None


def requeue_job(job_id: str, problem: dict[str, Any] | None = None, *, token: int, stage: str = "requeued") -> Job:
    """The holder of ``token`` hands its running job back: -> queued for another attempt,
    its lease released (``problem`` records why this attempt stopped), or -> failed with that
    problem when the job already ran ``Settings.max_attempts`` times. The returned job says
    which; the caller sends a queued one to the broker again. ``LeaseLost`` when ``token`` no
    longer holds the job.

    The worker slot is cleared; ``task_id`` stays (Celery retries reuse the task id).
    """
    job = _release(job_id, problem, stage, token, None)
    if job is None:
        with session_scope() as session:
            raise _lease_lost(job_id, token, session.get(Job, job_id))
    return job


def expire_lease(job_id: str, *, token: int, problem: dict[str, Any], now: datetime | None = None) -> Job | None:
    """The sweeper's write: a running job whose lease (taken with ``token``) expired before
    ``now`` -> queued, or -> failed once its attempt budget is spent. ``None`` when the job
    moved on meanwhile (renewed, finished, claimed again): nothing was written."""
    expired = and_(Job.lease_expires_at.is_not(None), Job.lease_expires_at < (now or utcnow()))
    return _release(job_id, problem, "requeued", token, expired)


def release_dead_process(job_id: str, *, task_id: str, worker: str, problem: dict[str, Any]) -> Job | None:
    """The worker ``worker`` saw its pool process that ran task ``task_id`` die (SIGKILL, the
    OOM killer): that holder is provably gone, so its running job -> queued now (or -> failed
    once its attempt budget is spent), not when its lease runs out.

    Only that claim is released: the row must be running with that task on that worker, and
    the write is fenced with the token read here, so a claim taken meanwhile (another worker,
    a later delivery) is untouched. ``None`` when no such claim holds the job.
    """
    with session_scope() as session:
        token = session.scalar(
            select(Job.fencing_token).where(
                Job.id == job_id,
                Job.status == JobStatus.RUNNING.value,
                Job.task_id == task_id,
                Job.worker == worker,
            )
        )
    if token is None:
        return None
    return _release(job_id, problem, "requeued", token, None)


def request_cancel(job_id: str, tenant: str | None) -> Job:
    """Cancel on behalf of a user: queued (or a parent waiting for its pieces, or waiting to be
    assembled) -> canceled at once; running -> cancel_requested; already canceled -> returned
    as is; succeeded/failed -> ``InvalidTransition`` (409). A parent's queued children are
    canceled with it and its running ones asked to stop (``cancel_children``)."""
    at_once = [JobStatus.QUEUED, JobStatus.WAITING, JobStatus.ASSEMBLING]
    for _ in range(3):  # the status may change between our two conditional UPDATEs
        job = get_job(job_id, tenant)
        now = utcnow()
        with session_scope() as session:
            values = {"cancel_requested": True, "finished_at": now, "updated_at": now, "stage": "canceled",
                      "lease_expires_at": None}
            if not _write_status(session, job_id, JobStatus.CANCELED, values, only_from=at_once):
                # running: not a status write; the worker sees the flag and calls mark_canceled
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                    .values(cancel_requested=True, updated_at=now, revision=Job.revision + 1)
                    .execution_options(synchronize_session=False)
                )
            _cancel_children(session, job_id, now)
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


# --- fan-out: parent and child jobs (shared.jobs.fanout) --------------------------------


@dataclass(frozen=True)
class NewPiece:
    """One child job to create: its label (names the piece in problems) and the JSON its
    piece runner gets back."""

    label: str
    data: dict[str, Any]


def _cancel_children(session: Session, parent_id: str, now: datetime) -> int:
    """Queued children -> canceled; running ones get ``cancel_requested`` (their workers stop
    at the next step). Returns how many rows it touched."""
    canceled = cast(CursorResult[Any], session.execute(
        update(Job)
        .where(Job.parent_id == parent_id, allowed_condition(JobStatus.CANCELED, only_from=[JobStatus.QUEUED]))
        .values(status=JobStatus.CANCELED.value, cancel_requested=True, finished_at=now, updated_at=now,
                stage="canceled", revision=Job.revision + 1)
        .execution_options(synchronize_session=False)
    ))
    asked = cast(CursorResult[Any], session.execute(
        update(Job)
        .where(Job.parent_id == parent_id, Job.status == JobStatus.RUNNING.value, Job.cancel_requested.is_(False))
        .values(cancel_requested=True, updated_at=now, revision=Job.revision + 1)
        .execution_options(synchronize_session=False)
    ))
    return int(canceled.rowcount or 0) + int(asked.rowcount or 0)


def split_job(job_id: str, pieces: list[NewPiece], *, token: int) -> list[Job]:
    """The holder of ``token`` splits its running job: one queued child job per piece (same
    tenant, spec, method, queue and priority; ``parent_id`` and ``piece`` =
    ``{index, total, label, data}``) and the parent running -> waiting with its lease
    released, in ONE transaction. Returns the children in piece order; the caller sends them
    to the broker. ``LeaseLost`` when ``token`` no longer holds the job; ``InvalidTransition``
    when a cancel was requested meanwhile (nothing written: the caller cancels the job)."""
    if not pieces:
        raise ValueError("split_job needs at least one piece")
    now = utcnow()
    total = len(pieces)
    with session_scope() as session:
        parent = _load(session, job_id)
        values = {"lease_expires_at": None, "worker": None, "step": 0, "total": total, "progress": 0.0,
                  "stage": f"pieces 0/{total}"}
        if not _write_status(session, job_id, JobStatus.WAITING, values, args=GuardArgs(token=token),
                             also=Job.cancel_requested.is_(False)):
            job = session.get(Job, job_id, populate_existing=True)
            if job is None or job.status != JobStatus.RUNNING.value or job.fencing_token != token:
                raise _lease_lost(job_id, token, job)
            raise InvalidTransition(f"Job {job_id} was asked to cancel; it is not split.", job_id=job_id,
                                    job_status=job.status)
        children = [
            Job(
                id=new_id(), tenant=parent.tenant, method=parent.method, spec=parent.spec,
                status=JobStatus.QUEUED.value, queue=parent.queue, priority=parent.priority,
                progress=0.0, step=0, total=0, stage="", attempts=0, cancel_requested=False,
                parent_id=job_id, piece={"index": i, "total": total, "label": p.label, "data": p.data},
                created_at=now, updated_at=now, estimated_cost=0.0,
            )
            for i, p in enumerate(pieces)
        ]
        session.add_all(children)
        session.flush()
        session.expunge_all()
        return children


def children_of(parent_id: str) -> list[Job]:
    """The child jobs of ``parent_id`` in piece order (empty for a job that was not split)."""
    with read_scope() as session:
        rows = list(session.scalars(select(Job).where(Job.parent_id == parent_id)))
    return sorted(rows, key=lambda j: (j.piece or {}).get("index", 0))


@dataclass(frozen=True)
class PiecesSummary:
    """How far the children of a parent are: what ``GET /v1/jobs/{id}`` shows."""

    total: int
    done: int
    failed: int
    running: int
    fraction: float  # mean progress of the children, 0..1
    children: list[str]


def pieces_summary(parent_id: str) -> PiecesSummary | None:
    """The parent's pieces (one small indexed read), ``None`` when it has none."""
    with read_scope() as session:
        return _pieces_summary(session, parent_id)


@dataclass(frozen=True)
class JobRead:
    """What ``GET /v1/jobs/{id}`` shows beside the row: the pieces of a job split into
    pieces, a queued job's place in line (``shared.jobs.queue_stats.position_column``)."""

    job: Job
    pieces: PiecesSummary | None
    position: int | None  # None unless queued


@functools.cache
def _read_job_statement() -> Select[Job, bool, int | None]:
    """``read_job``'s statement, built once (building the aliased subqueries costs more CPU
    than running them); the job's id is the ``job_id`` parameter."""
    child = aliased(Job)
    has_pieces = exists().where(child.parent_id == Job.id)
    position = case((Job.status == JobStatus.QUEUED.value, queue_stats.position_column()), else_=None)
    return select(Job, has_pieces, position).where(Job.id == bindparam("job_id"))


def read_job(job_id: str, tenant: str | None = None) -> JobRead:
    """The job, whether it has pieces and, if queued, its position, in ONE statement on one
    pooled connection (no transaction); the pieces' summary in a second only for a job that
    has pieces. The API's hot path: a polled ``GET`` costs one round trip (and the pool's
    pre-ping) instead of four."""
    with read_scope() as session:
        row = session.execute(_read_job_statement(), {"job_id": job_id}).one_or_none()
        if row is None or (tenant is not None and row[0].tenant != tenant):
            raise NotFound(f"No job with id {job_id!r}.", job_id=job_id)
        job, pieces_exist, place = row
        pieces = _pieces_summary(session, job_id) if pieces_exist else None
    return JobRead(job=job, pieces=pieces, position=None if place is None else int(place))


def _pieces_summary(session: Session, parent_id: str) -> PiecesSummary | None:
    rows = list(session.execute(
        select(Job.id, Job.status, Job.progress, Job.piece).where(Job.parent_id == parent_id)
    ))
    if not rows:
        return None
    rows.sort(key=lambda r: (r.piece or {}).get("index", 0))
    done = sum(r.status == JobStatus.SUCCEEDED.value for r in rows)
    fraction = sum(1.0 if r.status == JobStatus.SUCCEEDED.value else float(r.progress or 0.0) for r in rows)
    return PiecesSummary(
        total=len(rows), done=done, failed=sum(r.status in CHILD_LOST_STATUSES for r in rows),
        running=sum(r.status == JobStatus.RUNNING.value for r in rows), fraction=fraction / len(rows),
        children=[r.id for r in rows],
    )


def _piece_problem(parent_id: str, child: Job) -> dict[str, Any]:
    piece = child.piece or {}
    label = piece.get("label") or f"piece {piece.get('index', '?')}"
    cause = child.error or {}
    why = cause.get("detail") or ("it was canceled" if child.status == JobStatus.CANCELED.value else child.status)
    err = PieceFailed(
        f"{label} (piece {int(piece.get('index', 0)) + 1} of {piece.get('total', '?')}, job {child.id}) "
        f"{'was canceled' if child.status == JobStatus.CANCELED.value else 'failed'}: {why}",
        piece_index=piece.get("index"), piece_label=label, child_id=child.id, child_status=child.status,
        child_problem=cause or None,
    )
    return err.to_problem(instance=f"/v1/jobs/{parent_id}")


def settle_parent(parent_id: str) -> Job | None:
    """Decide a waiting parent from its children; safe to call any number of times, from any
    process, at any moment (the children's workers when a child ends, the sweeper):

    * every child succeeded -> assembling, ``attempts`` reset to 0 (the assembly's own budget);
    * a child failed or was canceled -> failed with a ``piece-failed`` problem naming the first
      such piece and why, and the other children canceled;
    * otherwise the parent's ``step`` / ``progress`` are brought up to the pieces done.

    Each status move is ONE conditional UPDATE on ``status = 'waiting'`` AND its guard, so of
    two children finishing at the same moment exactly one caller gets the parent back (the
    other finds it no longer waiting). Returns the parent when THIS call moved it, else None.
    """
    now = utcnow()
    with session_scope() as session:
        rows = list(session.execute(
            select(Job.status).where(Job.parent_id == parent_id)
        ).scalars())
        if not rows:
            return None
        total, done = len(rows), sum(s == JobStatus.SUCCEEDED.value for s in rows)
        if done == total and _write_status(
            session, parent_id, JobStatus.ASSEMBLING,
            {"attempts": 0, "step": done, "total": total, "progress": 1.0, "stage": "assembling"},
        ):
            return _load(session, parent_id)
        lost = session.scalars(
            select(Job).where(Job.parent_id == parent_id, Job.status.in_(CHILD_LOST_STATUSES))
        ).all()
        if lost:
            first = min(lost, key=lambda j: (j.piece or {}).get("index", 0))
            values = {"error": _piece_problem(parent_id, first), "finished_at": now, "stage": "failed",
                      "lease_expires_at": None}
            if _write_status(session, parent_id, JobStatus.FAILED, values, only_from=[JobStatus.WAITING]):
                _cancel_children(session, parent_id, now)
                return _load(session, parent_id)
            return None
        session.execute(
            update(Job)
            .where(Job.id == parent_id, Job.status == JobStatus.WAITING.value, Job.step != done)
            .values(step=done, total=total, progress=done / total, stage=f"pieces {done}/{total}",
                    updated_at=now, revision=Job.revision + 1)
            .execution_options(synchronize_session=False)
        )
    return None


def waiting_parents(limit: int = 500) -> list[str]:
    """Ids of parents waiting for their pieces (the sweeper settles each: a lost trigger)."""
    with session_scope() as session:
        return list(session.scalars(
            select(Job.id).where(Job.status == JobStatus.WAITING.value).order_by(Job.updated_at).limit(limit)
        ))


def count_children(parent_ids: Collection[str]) -> dict[str, int]:
    """How many child jobs each of ``parent_ids`` has (absent: none)."""
    if not parent_ids:
        return {}
    with session_scope() as session:
        rows = session.execute(
            select(Job.parent_id, func.count()).where(Job.parent_id.in_(list(parent_ids))).group_by(Job.parent_id)
        ).all()
    return {str(p): int(n) for p, n in rows}
