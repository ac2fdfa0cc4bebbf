"""``/v1/workers`` and ``/v1/queues``: the fleet and the depth of each queue; and a queued
job's place in line (``queue_placement``, shown by ``GET /v1/jobs/{id}``).

Workers and queues are the farm's, not a tenant's: any authenticated caller sees them. A
worker's ``current_job`` is shown only to the tenant that owns the job; others see only that
the worker is ``busy``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, TenantDep
from api.problems import problem_responses
from shared.broker import fleet
from shared.broker.celery_config import MAX_PRIORITY, QUEUES, priority_list_name
from shared.db.orm import Job
from shared.errors import BrokerUnavailable
from shared.jobs import queue_stats
from shared.jobs.methods import get_method
from shared.jobs.specs import JobSpecModel
from shared.jobs.status import JobStatus
from shared.jobs.store import request_hash_of
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["fleet"])


# --- shapes --------------------------------------------------------------------------------


class CurrentJobOut(BaseModel):
    id: str
    started_at: datetime | None = Field(description="when the worker took it")
    link: str


class WorkerOut(BaseModel):
    id: str = Field(description="the Celery worker name, name@host")
    host: str | None
    pid: int | None = Field(description="of the worker's main process on its host")
    state: str = Field(description="starting | ready | stopping")
    queues: list[str] = Field(description="the queues it consumes")
    device: str | None = Field(description="cpu | cuda | cuda:N")
    device_name: str | None = Field(description="the GPU's or the CPU's model name")
    memory_bytes: int | None = Field(description="the GPU's memory (cuda) or the machine's (cpu)")
    models: list[str] = Field(description="models its jobs loaded, most recent first")
    busy: bool = Field(description="it runs a job now")
    current_job: CurrentJobOut | None = Field(description="the job it runs, when the caller owns that job")
    started_at: datetime | None
    last_heartbeat_at: datetime | None = Field(description="a worker that misses three heartbeats leaves the list")


class WorkerListOut(BaseModel):
    items: list[WorkerOut]


class PriorityDepthOut(BaseModel):
    priority: int = Field(description="0 normal .. 9 most urgent")
    list: str = Field(description="the Redis list holding this priority's messages")
    waiting: int


class QueueOut(BaseModel):
    name: str
    waiting: int | None = Field(description="messages waiting in the broker; null when the broker is unreachable")
    waiting_by_priority: list[PriorityDepthOut] | None = Field(description="most urgent first")
    queued: int = Field(description="jobs queued in SQL, every tenant (some may be waiting for a retry)")
    running: int = Field(description="jobs running in SQL, every tenant")
    workers: int | None = Field(description="live workers consuming it; null when the registry is unreachable")
    idle_workers: int | None


class QueueListOut(BaseModel):
    items: list[QueueOut]


# --- helpers -------------------------------------------------------------------------------


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _live_workers(settings: Settings) -> list[fleet.WorkerRecord]:
    client = fleet.client_for(settings.broker_url)
    if client is None:
        return []
    try:
        return fleet.list_workers(client)
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"the fleet registry in the broker is unreachable ({type(exc).__name__})") from None


def _serving(workers: list[fleet.WorkerRecord], queue: str) -> list[fleet.WorkerRecord]:
    return [w for w in workers if queue in w.queues and w.state != "stopping"]


def queue_placement(job: Job, position: int | None, settings: Settings) -> tuple[int | None, float | None]:
    """(position, estimated_start_s) of a queued job whose ``position`` was read with it
    (``store.read_job``); (None, None) for any other status."""
    if job.status != JobStatus.QUEUED or position is None:
        return None, None
    workers = fleet.fleet_cache.get(settings.broker_url)
    if workers is None:
        return position, None
    serving = _serving(workers, job.queue)
    idle = sum(1 for w in serving if not w.busy)
    mean = queue_stats.recent_mean_duration_s(job.method)
    return position, queue_stats.estimate_start_s(position, len(serving), idle, mean)


PRIORITY_DOC = "0 (normal) .. 9 (most urgent): a worker takes the most urgent waiting job of its queues first"
QUEUE_DOC = "the queue (resource class) to run on; default: the method's queue in the method registry"


def placement_request_hash(
    spec: JobSpecModel, priority: int, queue: str | None, webhook: str | None = None
) -> str | None:
    """The idempotency hash of a submission with a non-default priority or queue, or with a
    webhook (so that a key reused with another placement or webhook is refused); ``None`` = the
    spec's own hash."""
    spec_json = spec.model_dump(mode="json")
    default_queue = get_method(spec_json["method"]).queue
    if priority == 0 and queue in (None, default_queue) and webhook is None:
        return None
    extra: dict[str, object] = {"webhook": webhook} if webhook is not None else {}
    return request_hash_of({"spec": spec_json, "priority": priority, "queue": queue or default_queue, **extra})


# --- routes --------------------------------------------------------------------------------


@router.get("/workers", response_model=WorkerListOut, responses=problem_responses(401, 503), summary="The fleet")
def list_workers(settings: SettingsDep, tenant: TenantDep) -> WorkerListOut:
    """The live workers: what they are, what they consume and what they run. A worker that
    stops heartbeating (killed, partitioned) leaves the list within three heartbeats."""
    workers = _live_workers(settings)
    running = [j.id for w in workers for j in w.jobs]
    owned = queue_stats.jobs_of_tenant(tenant, running) if running else set()
    items = []
    for w in workers:
        current = w.current_job
        shown = None
        if current is not None and current.id in owned:
            shown = CurrentJobOut(id=current.id, started_at=_when(current.since), link=f"/v1/jobs/{current.id}")
        items.append(
            WorkerOut(
                id=w.id,
                host=w.host,
                pid=w.pid,
                state=w.state,
                queues=w.queues,
                device=w.device,
                device_name=w.device_name,
                memory_bytes=w.memory_bytes,
                models=w.models,
                busy=w.busy,
                current_job=shown,
                started_at=_when(w.started_at),
                last_heartbeat_at=_when(w.heartbeat_at),
            )
        )
    return WorkerListOut(items=items)


def _broker_depths(settings: Settings) -> dict[str, dict[str, int]] | None:
    from shared.broker.client import queue_depths

    try:
        return queue_depths(settings)
    except BrokerUnavailable:
        return None


@router.get("/queues", response_model=QueueListOut, responses=problem_responses(401, 503), summary="Queue depths")
async def list_queues(settings: SettingsDep, tenant: TenantDep) -> QueueListOut:
    """Each queue: messages waiting in the broker (per priority), queued and running jobs in
    SQL, live workers consuming it. Broker figures are null while the broker is unreachable."""
    counts = await run_in_threadpool(queue_stats.counts_by_queue)
    depths = await run_in_threadpool(_broker_depths, settings)
    try:
        workers: list[fleet.WorkerRecord] | None = await run_in_threadpool(_live_workers, settings)
    except BrokerUnavailable:
        workers = None
    items = []
    for name in QUEUES:
        lists = depths.get(name, {}) if depths is not None else None
        by_priority = (
            [
                PriorityDepthOut(priority=p, list=list_name, waiting=lists.get(list_name, 0))
                for p in range(MAX_PRIORITY, -1, -1)
                for list_name in [priority_list_name(name, p)]
            ]
            if lists is not None
            else None
        )
        serving = _serving(workers, name) if workers is not None else None
        items.append(
            QueueOut(
                name=name,
                waiting=sum(lists.values()) if lists is not None else None,
                waiting_by_priority=by_priority,
                queued=counts.get(name, {}).get("queued", 0),
                running=counts.get(name, {}).get("running", 0),
                workers=len(serving) if serving is not None else None,
                idle_workers=sum(1 for w in serving if not w.busy) if serving is not None else None,
            )
        )
    return QueueListOut(items=items)
