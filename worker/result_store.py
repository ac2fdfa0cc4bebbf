"""Store what the engine produced and describe it as a typed outcome (``shared.jobs.outcomes``).

* ``store_result``: one of the three below, by the kind of result.
* ``store_render_result``: the image as a PNG at ``result_key(tenant, job_id, RENDER_NAME)``
  (a retried job overwrites the same key) -> ``RenderOutcome``.
* ``store_train_result``: the checkpoint uploaded to ``model_key`` and registered in the
  model registry under the spec's name, the loss curve at ``LOSS_CURVE_NAME`` ->
  ``TrainOutcome``. The model id hashes the job id and the checkpoint, so a retry that
  produces the same file registers the same model.
* ``store_video_result``: each output video as ``<name>.mp4`` and its poster as ``<name>.png``
  under the job's result prefix -> ``VideoOutcome``.
* ``trained_model_name``: the model name a training spec names.
* ``check_model_name_free``: a training job fails at its start, not after hours, when its
  model name belongs to another job.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from shared.checksums import sha256_file
from shared.engine.results import RenderFile, RenderResult, TrainResult, VideoResult
from shared.errors import Conflict, EngineError, NotFound
from shared.imaging import png_bytes
from shared.jobs import model_registry
from shared.jobs.outcomes import (
    JobOutcome,
    RenderKeys,
    RenderOutcome,
    TrainKeys,
    TrainOutcome,
    VideoFile,
    VideoOutcome,
    json_safe,
)
from shared.jobs.specs import JobSpecModel, TrainAdainSpec, TrainFastSpec
from shared.storage import LOSS_CURVE_NAME, RENDER_NAME, checkpoint_key, model_key, result_key
from worker.job_runtime import JobRuntime


def store_result(rt: JobRuntime, spec: JobSpecModel, result: RenderResult | RenderFile | TrainResult | VideoResult,
                 ) -> JobOutcome:
    """Store ``result`` of the job ``spec`` describes; a training spec names its model."""
    if isinstance(result, TrainResult):
        return store_train_result(rt, trained_model_name(spec), result)
    if isinstance(result, RenderFile):
        return store_render_file(rt, result)
    if isinstance(result, VideoResult):
        return store_video_result(rt, result)
    return store_render_result(rt, result)


def store_render_file(rt: JobRuntime, result: RenderFile) -> RenderOutcome:
    """A PNG the engine already wrote (a giant assembled render): uploaded from its file."""
    key = result_key(rt.tenant, rt.job_id, RENDER_NAME)
    rt.storage.upload_file(Path(result.path), key, "image/png")
    return RenderOutcome(keys=RenderKeys(image=key), width=result.width, height=result.height,
                         size_bytes=Path(result.path).stat().st_size, content_type="image/png",
                         metrics=result.metrics)


def store_video_result(rt: JobRuntime, result: VideoResult) -> VideoOutcome:
    files = []
    for v in result.videos:
        video_key = result_key(rt.tenant, rt.job_id, f"{v.name}.mp4")
        poster_key = result_key(rt.tenant, rt.job_id, f"{v.name}.png")
        rt.storage.put_bytes(video_key, v.video, "video/mp4")
        rt.storage.put_bytes(poster_key, png_bytes(v.poster.convert("RGB")), "image/png")
        files.append(VideoFile(name=v.name, video=video_key, poster=poster_key, frames=v.frames, fps=v.fps,
                               duration_s=v.duration_s, width=v.width, height=v.height, audio=v.audio,
                               size_bytes=len(v.video)))
    return VideoOutcome(videos=files, metrics=result.metrics)


def trained_model_name(spec: JobSpecModel) -> str:
    """The name of the model a training spec trains; ``EngineError`` for any other spec."""
    if not isinstance(spec, TrainFastSpec | TrainAdainSpec):
        raise EngineError(f"a {spec.method!r} job does not train a model")
    return spec.name


def store_render_result(rt: JobRuntime, result: RenderResult) -> RenderOutcome:
    png = png_bytes(result.image.convert("RGB"))
    key = result_key(rt.tenant, rt.job_id, RENDER_NAME)
    rt.storage.put_bytes(key, png, "image/png")
    return RenderOutcome(
        keys=RenderKeys(image=key),
        width=result.image.width,
        height=result.image.height,
        size_bytes=len(png),
        content_type="image/png",
        metrics=result.metrics,
    )


def store_train_result(rt: JobRuntime, model_name: str, result: TrainResult) -> TrainOutcome:
    ckpt = Path(result.checkpoint)
    checksum = sha256_file(ckpt)
    model_id = hashlib.sha256(f"{rt.job_id}:{checksum}".encode()).hexdigest()[:32]  # stable across retries
    key = model_key(rt.tenant, model_id)
    rt.storage.upload_file(ckpt, key)
    config: dict[str, Any] = {}
    preprocessing: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        from shared.engine.checkpoint import load_checkpoint

        payload = load_checkpoint(ckpt)
        config = json_safe(payload.get("config") or {})
        preprocessing = json_safe(payload.get("preprocessing") or {})
    model = model_registry.register_model(
        name=model_name,
        kind=result.kind,
        checksum=checksum,
        storage_key=key,
        tenant=rt.tenant,
        style_names=list(result.style_names),
        preprocessing=preprocessing,
        config=config,
        size_bytes=ckpt.stat().st_size,
        created_by_job=rt.job_id,
        model_id=model_id,
        replace=_owned_by(rt.tenant, model_name, rt.job_id),
    )
    loss_key = None
    if result.loss_curve_png:
        loss_key = result_key(rt.tenant, rt.job_id, LOSS_CURVE_NAME)
        rt.storage.put_bytes(loss_key, result.loss_curve_png, "image/png")
    return TrainOutcome(
        keys=TrainKeys(model=key, checkpoint=checkpoint_key(rt.tenant, rt.job_id), loss_curve=loss_key),
        model_id=model.id,
        model_name=model_name,
        model_kind=result.kind,
        style_names=list(result.style_names),
        metrics=result.metrics,
    )


def _owned_by(tenant: str, name: str, job_id: str) -> bool:
    """True when ``name`` is already registered by this job: a retried job may replace its
    own model, never another job's."""
    try:
        existing = model_registry.get_model(name, tenant)
    except NotFound:
        return False
    return existing.tenant == tenant and existing.created_by_job == job_id


def check_model_name_free(tenant: str, name: str, job_id: str) -> None:
    """Fail a training job at its start, not after hours, when its model name is taken."""
    try:
        existing = model_registry.get_model(name, tenant)
    except NotFound:
        return
    if existing.tenant == tenant and existing.created_by_job != job_id:
        raise Conflict(
            f"a model named {name!r} already exists ({existing.id}); train under another name", model_id=existing.id
        )
