"""Response shapes of the API and the functions that build them from database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.db.orm import Input, Job, ModelRow, utcnow
from shared.jobs.cost import UNIT, CostEstimate
from shared.jobs.outcomes import RenderOutcome, parse_outcome


class ProgressOut(BaseModel):
    fraction: float = Field(description="0..1")
    step: int
    total: int
    loss: float | None
    stage: str


class TimingsOut(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_seconds: float | None = Field(description="waiting time before the (latest) start; so far while queued")
    run_seconds: float | None = Field(description="running time of the latest attempt; so far while running")


class ResultOut(BaseModel):
    width: int | None = Field(default=None, description="of the output image; null for training jobs")
    height: int | None = Field(default=None, description="of the output image; null for training jobs")
    metrics: dict[str, Any] = Field(default_factory=dict)


class CostOut(BaseModel):
    gpu_seconds: float = Field(description=f"estimated cost in {UNIT} (shared/jobs/cost.py): what tenant budgets count")
    seconds: float = Field(description="expected run time on a worker of the job's queue")
    queue: str


class JobOut(BaseModel):
    id: str
    method: str
    status: str
    spec: dict[str, Any]
    queue: str
    priority: int
    attempts: int
    cancel_requested: bool
    progress: ProgressOut
    timings: TimingsOut
    error: dict[str, Any] | None = Field(description="RFC 9457 problem details of the failure (or last retry)")
    result: ResultOut | None
    model_id: str | None = Field(description="model a training job produced")
    estimated_cost: CostOut
    links: dict[str, str]
    position: int | None = Field(
        default=None,
        description="a queued job (GET /v1/jobs/{id} only): how many queued jobs of its queue run first "
        "(higher priority, or the same priority and older); null otherwise",
    )
    estimated_start_s: float | None = Field(
        default=None,
        description="a queued job (GET /v1/jobs/{id} only): seconds until it starts, from its position, the "
        "live workers on its queue and the recent mean duration of its method; null when unknown",
    )


class JobListOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class InputOut(BaseModel):
    id: str = Field(description="sha256 hex of the bytes; use it as an image/dataset reference in job specs")
    size: int
    width: int | None
    height: int | None
    content_type: str
    kind: str = Field(description="image | archive")
    created_at: datetime


class ModelOut(BaseModel):
    id: str
    name: str
    kind: str
    scope: str = Field(description="global (built in) or tenant")
    style_names: list[str]
    num_styles: int
    preprocessing: dict[str, Any]
    size_bytes: int
    checksum: str
    created_by_job: str | None
    created_at: datetime
    links: dict[str, Any]


class ModelListOut(BaseModel):
    items: list[ModelOut]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def job_out(
    job: Job, base: str = "", *, position: int | None = None, estimated_start_s: float | None = None
) -> JobOut:
    """The public view of a job; ``base`` prefixes links (empty = root-relative); a queued
    job's place in line when the caller computed it (``api.routes.fleet.queue_placement``)."""
    now = utcnow()
    queued_until = job.started_at or (now if job.status == "queued" else None)
    running_until = job.finished_at or (now if job.status == "running" else None)
    self_link = f"{base}/v1/jobs/{job.id}"
    links = {"self": self_link, "cancel": f"{self_link}/cancel"}
    if job.preview_version:
        links["preview"] = f"{self_link}/preview?v={job.preview_version}"
    if job.status == "succeeded":
        links["result"] = f"{self_link}/result"
    if job.model_id:
        links["model"] = f"{base}/v1/models/{job.model_id}"
    result = None
    if job.result is not None:
        outcome = parse_outcome(job.result)
        if isinstance(outcome, RenderOutcome):
            result = ResultOut(width=outcome.width, height=outcome.height, metrics=outcome.metrics)
        else:
            result = ResultOut(metrics=outcome.metrics)
    return JobOut(
        id=job.id,
        method=job.method,
        status=job.status,
        spec=job.spec,
        queue=job.queue,
        priority=job.priority,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        progress=ProgressOut(fraction=job.progress, step=job.step, total=job.total, loss=job.loss, stage=job.stage),
        timings=TimingsOut(
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            queue_seconds=_seconds(job.created_at, queued_until),
            run_seconds=_seconds(job.started_at, running_until),
        ),
        error=job.error,
        result=result,
        model_id=job.model_id,
        estimated_cost=CostOut(**CostEstimate.of(job.estimated_cost or 0.0, job.queue).__dict__),
        links=links,
        position=position,
        estimated_start_s=estimated_start_s,
    )


def input_out(row: Input) -> InputOut:
    return InputOut(
        id=row.sha256,
        size=row.size,
        width=row.width,
        height=row.height,
        content_type=row.content_type,
        kind=row.kind,
        created_at=row.created_at,
    )


def model_out(model: ModelRow, base: str = "") -> ModelOut:
    self_link = f"{base}/v1/models/{model.id}"
    thumbs = {k: f"{self_link}/thumbnails/{k}" for k in sorted(model.thumbnails or {}, key=lambda s: int(s))}
    return ModelOut(
        id=model.id,
        name=model.name,
        kind=model.kind,
        scope="global" if model.tenant is None else "tenant",
        style_names=list(model.style_names or []),
        num_styles=len(model.style_names or []),
        preprocessing=model.preprocessing or {},
        size_bytes=model.size_bytes,
        checksum=model.checksum,
        created_by_job=model.created_by_job,
        created_at=model.created_at,
        links={"self": self_link, "thumbnails": thumbs},
    )
