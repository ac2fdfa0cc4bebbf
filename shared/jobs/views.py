"""The public view of a job (``GET /v1/jobs/{id}``), built from its row without the API: the
API answers it, the event stream sends it and a webhook event carries it as its ``data``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.db.orm import Job, utcnow
from shared.jobs.cost import UNIT, CostEstimate
from shared.jobs.outcomes import RenderOutcome, VideoOutcome, parse_outcome
from shared.jobs.store import PiecesSummary


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


class VideoOut(BaseModel):
    name: str = Field(description="'style-NN' (a fast style), 'image-N' (an adain style image) or 'mix'")
    video: str = Field(description="link to the H.264 mp4")
    poster: str = Field(description="link to the poster frame PNG")
    frames: int
    fps: str = Field(description="frame rate as a fraction, e.g. '30000/1001'")
    duration_s: float
    width: int
    height: int
    audio: bool


class ResultOut(BaseModel):
    width: int | None = Field(default=None, description="of the output image; null for training jobs")
    height: int | None = Field(default=None, description="of the output image; null for training jobs")
    metrics: dict[str, Any] = Field(default_factory=dict)
    videos: list[VideoOut] | None = Field(default=None, description="a video job's output videos; null otherwise")


class CostOut(BaseModel):
    gpu_seconds: float = Field(description=f"estimated cost in {UNIT} (shared/jobs/cost.py): what tenant budgets count")
    seconds: float = Field(description="expected run time on a worker of the job's queue")
    queue: str


class WebhookOut(BaseModel):
    url: str
    state: str = Field(description="pending (not delivered yet) | delivered | failed (gave up, or refused)")
    attempts: int = Field(description="deliveries tried so far")
    last_status: int | None = Field(
        description="HTTP status of the last attempt; null before one, or without a response"
    )
    last_error: str | None = Field(description="why the last attempt failed")
    delivered_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="while pending: when the next attempt is due (during an attempt: the end of its lease)"
    )


class PiecesOut(BaseModel):
    """A job split into pieces (child jobs: image tiles, video chunks) that many workers share."""

    total: int = Field(description="pieces the job was split into")
    done: int = Field(description="pieces that succeeded")
    running: int = Field(description="pieces running now")
    failed: int = Field(description="pieces that failed or were canceled")
    children: list[str] = Field(description="the child jobs' ids, in piece order (GET /v1/jobs/{id} each)")


class PieceOut(BaseModel):
    """The piece of its parent a child job renders."""

    parent_id: str
    index: int = Field(description="0-based, in the parent's piece order")
    total: int
    label: str


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
    webhook: WebhookOut | None = Field(
        default=None, description="delivery of the final-status event; null without a webhook"
    )
    pieces: PiecesOut | None = Field(
        default=None,
        description="a job split into child jobs (GET /v1/jobs/{id} and its events): pieces done / total and the "
        "children's ids; progress then aggregates the children's. Null otherwise (and in lists)",
    )
    piece: PieceOut | None = Field(default=None, description="a child job: which piece of which parent it renders")

def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def job_out(
    job: Job, base: str = "", *, position: int | None = None, estimated_start_s: float | None = None,
    pieces: PiecesSummary | None = None,
) -> JobOut:
    """The public view of a job; ``base`` prefixes links (empty = root-relative); a queued
    job's place in line when the caller computed it (``api.routes.fleet.queue_placement``);
    a split job's ``pieces`` when the caller read them (``store.read_job``, ``store.pieces_summary``): a waiting
    parent's progress is then the mean of its children's."""
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
        elif isinstance(outcome, VideoOutcome):
            files = f"{self_link}/files"
            result = ResultOut(
                width=outcome.videos[0].width, height=outcome.videos[0].height, metrics=outcome.metrics,
                videos=[
                    VideoOut(name=v.name, video=f"{files}/{v.video_file}", poster=f"{files}/{v.poster_file}",
                             frames=v.frames, fps=v.fps, duration_s=v.duration_s, width=v.width, height=v.height,
                             audio=v.audio)
                    for v in outcome.videos
                ],
            )
        else:
            result = ResultOut(metrics=outcome.metrics)
    progress = ProgressOut(fraction=job.progress, step=job.step, total=job.total, loss=job.loss, stage=job.stage)
    if pieces is not None and job.status == "waiting":
        progress = progress.model_copy(update={"fraction": round(pieces.fraction, 4), "step": pieces.done,
                                               "total": pieces.total, "stage": f"pieces {pieces.done}/{pieces.total}"})
    if pieces is not None:
        links["children"] = f"{base}/v1/jobs?parent_id={job.id}"
    piece = None
    if job.parent_id is not None and job.piece:
        piece = PieceOut(parent_id=job.parent_id, index=int(job.piece.get("index", 0)),
                         total=int(job.piece.get("total", 0)), label=str(job.piece.get("label", "")))
        links["parent"] = f"{base}/v1/jobs/{job.parent_id}"
    return JobOut(
        id=job.id,
        method=job.method,
        status=job.status,
        spec=job.spec,
        queue=job.queue,
        priority=job.priority,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        progress=progress,
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
        webhook=webhook_out(job),
        pieces=PiecesOut(total=pieces.total, done=pieces.done, running=pieces.running, failed=pieces.failed,
                         children=pieces.children) if pieces is not None else None,
        piece=piece,
    )


def webhook_out(job: Job) -> WebhookOut | None:
    if not job.webhook_url:
        return None
    return WebhookOut(
        url=job.webhook_url,
        state=job.webhook_state or "pending",
        attempts=job.webhook_attempts,
        last_status=job.webhook_last_status,
        last_error=job.webhook_last_error,
        delivered_at=job.webhook_delivered_at,
        next_attempt_at=job.webhook_next_attempt_at,
    )
