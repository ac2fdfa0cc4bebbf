"""``/v1/jobs``: submit, watch, list, cancel jobs and fetch their results."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, StorageDep, TenantDep
from api.mask_checks import check_mask_shapes
from api.problems import problem_responses
from api.request_limits import read_json_object
from api.routes.blobs import BLOB_RESPONSES, serve_blob
from api.routes.fleet import PRIORITY_DOC, QUEUE_DOC, placement_request_hash, queue_placement
from api.schemas import JobListOut, JobOut, job_out
from shared.broker.celery_config import MAX_PRIORITY, QUEUES
from shared.db.orm import Job
from shared.errors import Conflict, InvalidSpec, ModelUnavailable, NotFound
from shared.jobs import inputs, model_registry, quotas, store
from shared.jobs.methods import METHOD_NAMES, estimate_cost, job_spec_adapter, parse_spec
from shared.jobs.outcomes import VideoOutcome, parse_outcome
from shared.jobs.specs import (
    BUILTIN_FAST_MODEL,
    DEFAULT_ADAIN_MODEL,
    JobSpecModel,
    dataset_prefix_name,
    prefix_dataset_images,
)
from shared.jobs.status import JobStatus
from shared.settings import Settings
from shared.storage import Storage, dataset_prefix, preview_key
from shared.webhooks.destinations import check_destination
from shared.webhooks.dispatch import notify_final

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("stylefarm.api")

JOB_SPEC_SCHEMA: dict[str, Any] = job_spec_adapter.json_schema(ref_template="#/components/schemas/{model}")
#: Sub-schemas of JobSpec; ``api.main`` merges them into the OpenAPI components.
JOB_SPEC_DEFS: dict[str, Any] = JOB_SPEC_SCHEMA.pop("$defs", {})


def _base(settings: SettingsDep) -> str:
    return settings.public_url.rstrip("/")


def _check_refs(tenant: str, spec: JobSpecModel, storage: Storage) -> None:
    """Every input the spec names must be the tenant's: images as images, videos as videos,
    datasets as archives or as a storage prefix holding at least one image."""
    images, videos, datasets = spec.image_refs(), spec.video_refs(), []
    problems: list[str] = []
    for ref in spec.dataset_refs():
        name = dataset_prefix_name(ref)  # InvalidSpec when malformed
        if name is None:
            datasets.append(ref)
            continue
        prefix = dataset_prefix(tenant, name)
        if not prefix_dataset_images(storage.list(prefix, limit=1000), prefix):
            problems.append(f"dataset {ref!r}: no images directly under {prefix} in storage")
    found = inputs.find_inputs(tenant, images + videos + datasets)
    missing = [r for r in dict.fromkeys(images + videos + datasets) if r not in found]
    for ref in missing:
        problems.append(f"input {ref!r} does not exist; upload it with POST /v1/inputs")
    for ref in images:
        if ref in found and found[ref].kind != "image":
            problems.append(f"input {ref!r} is an {found[ref].kind}, but an image is needed here")
    for ref in videos:
        if ref in found and found[ref].kind != "video":
            problems.append(f"input {ref!r} is an {found[ref].kind}, but a video is needed here")
    for ref in datasets:
        if ref in found and found[ref].kind != "archive":
            problems.append(f"input {ref!r} is an image, but a dataset (zip/tar archive) is needed here")
    if problems:
        raise InvalidSpec("; ".join(problems) + ".", missing_inputs=missing)


#: Registered by the first worker that starts (``worker.bootstrap``): a job may name them
#: before that has happened, and waits in the queue for that worker.
BUILTIN_MODELS = frozenset({BUILTIN_FAST_MODEL, DEFAULT_ADAIN_MODEL})


def _check_models(tenant: str, spec: JobSpecModel) -> None:
    """Every model the spec names must exist for the tenant, be of the right kind and have
    the style indices asked for, so a bad reference is refused now rather than failing later
    on a worker."""
    problems: list[str] = []
    for ref, kind, styles in spec.model_refs():
        try:
            model = model_registry.get_model(ref, tenant)
        except NotFound:
            if ref not in BUILTIN_MODELS:
                problems.append(f"model {ref!r} does not exist; GET /v1/models lists the available ones")
            continue
        if model.kind != kind:
            problems.append(f"model {ref!r} is a {model.kind!r} model, but this job needs a {kind!r} model")
            continue
        n = len(model.style_names or [])
        bad = [i for i in styles if i >= n]
        if n and bad:
            problems.append(f"model {ref!r} has {n} styles (0..{n - 1}); style {bad[0]} does not exist")
    if problems:
        raise ModelUnavailable("; ".join(problems) + ".")


def _enqueue(job: Job, settings: Settings) -> None:
    """Hand the committed job to the broker.

    If the broker is down the job is LEFT QUEUED for the sweeper (``worker.sweeper``
    re-sends queued jobs that have no message in the broker) and the client still gets
    202: the row is the source of truth, so nothing is lost, and an idempotent retry of
    the request returns this same job instead of creating a second one. We log it so an
    operator sees the broker outage; ``/readyz`` reports it too.
    """
    from shared.broker.client import enqueue_job  # looked up at call time so tests can monkeypatch it

    try:
        enqueue_job(job.id, job.queue, job.priority, method=job.method, settings=settings)
    except Exception as exc:  # BrokerUnavailable, or anything kombu/redis raise
        log.warning("job %s stays queued for the sweeper: enqueue failed: %s", job.id, exc)


@router.post(
    "",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(
        401, 413, 415, 422, 429, 503,
        others={200: {"description": "Replay of an earlier request with the same Idempotency-Key", "model": JobOut}},
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A job spec (its `method` picks the schema) and, beside its fields, an optional "
            "`webhook`: an http(s) URL that gets the job's signed final-status event (Standard Webhooks; "
            "the secret is at GET /v1/webhook-secret). A URL that resolves to a loopback, private, link-local "
            "or metadata address is a 422 problem unless the operator allows it.",
            "content": {"application/json": {"schema": JOB_SPEC_SCHEMA}},
        }
    },
    summary="Submit a job",
)
async def submit_job(
    request: Request,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    priority: Annotated[int, Query(ge=0, le=MAX_PRIORITY, description=PRIORITY_DOC)] = 0,
    queue: Annotated[Literal[QUEUES] | None, Query(description=QUEUE_DOC)] = None,  # type: ignore[valid-type]
) -> JobOut:
    """Validate the spec and its input references, check the tenant's budgets, store the job
    and queue it.

    With ``Idempotency-Key`` a retried request returns the same job (200) instead of
    creating another; the same key with a different body (or priority, or queue) is a 422
    problem. Over a budget: 429 with ``Retry-After`` (a ``quota-exceeded`` problem naming the
    limit); a job above the single-job cost limit: 422 ``job-too-expensive``. ``estimated_cost``
    is in the answer.
    A ``webhook`` URL beside the spec's fields is checked (``shared.webhooks.destinations``)
    and gets the job's final-status event.
    """
    body = await read_json_object(request)
    webhook = body.pop("webhook", None)
    spec = parse_spec(body)
    if webhook is not None:
        await run_in_threadpool(check_destination, webhook, settings)

    def check_references() -> None:  # one hop to the thread pool for the three lookups
        _check_refs(tenant, spec, storage)
        check_mask_shapes(tenant, spec)
        _check_models(tenant, spec)

    await run_in_threadpool(check_references)
    placement = placement_request_hash(spec, priority, queue, webhook)
    cost = estimate_cost(spec, queue).gpu_seconds

    def admit(session: Session) -> None:
        quotas.admit_job(session, tenant, cost, settings)

    job, created = await run_in_threadpool(
        lambda: store.create_job(
            tenant,
            spec,
            idempotency_key=idempotency_key or None,
            priority=priority,
            queue=queue,
            request_hash=placement,
            estimated_cost=cost,
            admit=admit,
            webhook_url=webhook,
        )
    )
    if created:
        await run_in_threadpool(_enqueue, job, settings)
    response.status_code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    response.headers["Retry-After"] = "1"
    return job_out(job, _base(settings))


@router.get("", response_model=JobListOut, responses=problem_responses(400, 401, 422, 503))
def list_jobs(
    tenant: TenantDep,
    settings: SettingsDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    # a Literal of the registry's names, built at run time (an enum in the schema): not a static type
    method: Annotated[Literal[METHOD_NAMES] | None, Query()] = None,  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=store.MAX_LIST_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    include_children: Annotated[
        bool, Query(description="also list the pieces (child jobs) of split jobs")
    ] = False,
    parent_id: Annotated[
        str | None, Query(max_length=64, description="only the pieces (child jobs) of this job")
    ] = None,
) -> JobListOut:
    """The tenant's jobs, newest first, ``limit`` per page. A job split into pieces (tiles,
    video chunks) is listed once: its child jobs only with ``include_children=true`` or
    ``parent_id``."""
    items, next_cursor = store.list_jobs(tenant, status=status_, method=method, limit=limit, cursor=cursor,
                                         include_children=include_children, parent_id=parent_id)
    base = _base(settings)
    return JobListOut(items=[job_out(j, base) for j in items], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(401, 404, 503))
def read_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> JobOut:
    """Status, progress, timings, error and result summary of a job; a queued job's
    ``position`` and ``estimated_start_s``; a job split into pieces: ``pieces`` (done / total,
    the children's ids), its progress the mean of theirs."""
    read = store.read_job(job_id, tenant)
    position, estimated_start_s = queue_placement(read.job, read.position, settings)
    return job_out(read.job, _base(settings), position=position, estimated_start_s=estimated_start_s,
                   pieces=read.pieces)


def _cancel(job_id: str, tenant: str, settings: SettingsDep) -> JobOut:
    job = store.request_cancel(job_id, tenant)
    notify_final(job, settings)  # a queued job is canceled here, with no worker to send its webhook
    return job_out(job, _base(settings))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 404, 409, 503),
)
def cancel_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> JobOut:
    """A queued job is canceled at once; a running one stops at its next step (watch
    ``status``); a finished one is a 409 problem."""
    return _cancel(job_id, tenant, settings)


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 404, 409, 503),
    summary="Cancel a job (alias of POST /v1/jobs/{job_id}/cancel)",
)
def delete_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> JobOut:
    return _cancel(job_id, tenant, settings)


def result_image_key(job: Job) -> str:
    """Storage key of the image a succeeded job produced: its outcome's ``image_key`` (the
    render, or a training job's loss curve)."""
    key = parse_outcome(job.result).image_key if job.result is not None else None
    if not key:
        hint = f"; its model is at /v1/models/{job.model_id}" if job.model_id else ""
        raise NotFound(f"Job {job.id} produced no result image{hint}.", job_id=job.id)
    return key


@router.get(
    "/{job_id}/result",
    response_class=Response,
    responses=problem_responses(401, 404, 409, 503, others=BLOB_RESPONSES),
)
async def read_result(job_id: str, tenant: TenantDep, settings: SettingsDep, storage: StorageDep) -> Response:
    """The output image: a 307 to a short-lived storage URL, or the PNG bytes with local
    storage. 409 problem while the job has not succeeded."""
    job = await run_in_threadpool(store.get_job, job_id, tenant)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(
            f"Job {job.id} is {job.status}; its result is available once it has succeeded.",
            job_id=job.id,
            job_status=job.status,
        )
    return await serve_blob(storage, result_image_key(job), settings.presign_expiry_s)


@router.get(
    "/{job_id}/files/{name}",
    response_class=Response,
    responses=problem_responses(
        401, 404, 409, 503,
        others={**BLOB_RESPONSES, 200: {"description": "The file itself (local storage)",
                                        "content": {"video/mp4": {}, "image/png": {}}}},
    ),
)
async def read_result_file(job_id: str, name: str, tenant: TenantDep, settings: SettingsDep,
                           storage: StorageDep) -> Response:
    """One file a succeeded job produced, by name: a video job's ``<output>.mp4`` and its poster
    ``<output>.png`` (``result.videos`` links them). 404 problem for a name the job did not make."""
    job = await run_in_threadpool(store.get_job, job_id, tenant)
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        raise Conflict(
            f"Job {job.id} is {job.status}; its files are available once it has succeeded.",
            job_id=job.id,
            job_status=job.status,
        )
    outcome = parse_outcome(job.result)
    files = outcome.files() if isinstance(outcome, VideoOutcome) else {}
    if name not in files:
        known = ", ".join(sorted(files)) or "none"
        raise NotFound(f"Job {job.id} produced no file named {name!r} (its files: {known}).", job_id=job.id)
    return await serve_blob(storage, files[name], settings.presign_expiry_s)


@router.get(
    "/{job_id}/preview",
    response_class=Response,
    responses=problem_responses(
        401, 404,
        others={200: {"content": {"image/png": {}}}, 307: {"description": "Redirect to a presigned URL"}},
    ),
)
async def read_preview(job_id: str, tenant: TenantDep, settings: SettingsDep, storage: StorageDep) -> Response:
    """The latest preview of an ``optimize`` / ``masked`` job (PNG, at most 256 px), replaced
    every few steps while it runs; 404 problem before the first one. ``links.preview`` and the
    job's events carry ``?v=<preview version>`` so each new preview has its own URL."""
    job = await run_in_threadpool(store.get_job, job_id, tenant)
    if not job.preview_version:
        raise NotFound(f"Job {job.id} has no preview yet (optimize and masked jobs make them while running).",
                       job_id=job.id)
    response = await serve_blob(storage, preview_key(job.tenant, job.id), settings.presign_expiry_s)
    response.headers["Cache-Control"] = "no-cache" if response.status_code == 200 else "no-store"
    return response
