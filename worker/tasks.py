"""The one task: ``stylefarm.run_job(job_id)``.

Thin on purpose: claim the job (conditional UPDATE), build an ``EngineContext``
(``worker.job_runtime``), call ``shared.engine.run_job``, store the outcome, and map every
error to one of: succeeded / failed (problem details) / canceled / requeued + retried.

Outcomes:

* ``RenderResult``: PNG at ``result_key(tenant, job_id, "output.png")`` (a retried job
  overwrites the same key), ``succeed_job(result={"keys": {"image": ...}, ...})``.
* ``TrainResult``: checkpoint uploaded to ``model_key``, model registered, loss curve
  stored, ``succeed_job(..., model_id=...)``.
* ``JobCanceled`` -> ``mark_canceled``; non-retryable ``StylefarmError`` -> ``fail_job``
  with its problem; retryable errors -> ``requeue_job`` and a Celery retry with
  exponential backoff (at most ``MAX_RETRIES``, then ``fail_job``); anything else ->
  ``fail_job`` with a generic engine-error problem (message, no traceback).
* Time limits: each method has a soft limit (``TIME_LIMITS``), enforced at the engine's
  step boundaries and by a SIGALRM timer; past it the job fails with a
  ``time-limit-exceeded`` problem. Celery's hard limit kills a stuck process; the
  reconciler then fails the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from shared.jobs import store

from shared.jobs import model_registry
from shared.broker.celery_config import TASK_NAME, TIME_LIMITS
from shared.checksums import sha256_file
from shared.errors import (
    Conflict,
    EngineError,
    InvalidTransition,
    JobCanceled,
    NotFound,
    StylefarmError,
    TimeLimitExceeded,
)
from shared.imaging import png_bytes
from shared.settings import get_settings
from shared.jobs.specs import TRAINING_METHODS, parse_spec
from shared.storage import get_storage, model_key, result_key
from worker import process_state
from worker.celery_app import app
from worker.job_runtime import JobRuntime

log = logging.getLogger("stylefarm.worker")

MAX_RETRIES = 5
BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 300
RESULT_NAME = "output.png"


class JobLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"job {self.extra['job_id']}: {msg}", kwargs


def backoff_s(retries: int) -> int:
    """5, 10, 20, 40, 80 ... seconds, capped."""
    return int(min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2**retries)))


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``TimeLimitExceeded`` in the main thread after ``seconds`` (SIGALRM)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise TimeLimitExceeded(f"the job ran longer than its {seconds:.0f}s time limit and was stopped", limit_s=seconds)

    old = signal.signal(signal.SIGALRM, _alarm)
    # a little later than the cooperative deadline, which stops the engine more cleanly
    signal.setitimer(signal.ITIMER_REAL, seconds + 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _jsonable(metrics: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (str, int, bool)) or v is None:
            out[str(k)] = v
        elif isinstance(v, float):
            out[str(k)] = v if v == v and abs(v) != float("inf") else None
        elif isinstance(v, (list, tuple)) and len(v) <= 1000:
            out[str(k)] = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in v]
        elif isinstance(v, dict):
            out[str(k)] = _jsonable(v)
        else:
            with contextlib.suppress(Exception):
                out[str(k)] = float(v)
                continue
            out[str(k)] = str(v)
    return out


def store_render_result(rt: JobRuntime, result) -> dict[str, Any]:
    png = png_bytes(result.image.convert("RGB"))
    key = result_key(rt.tenant, rt.job_id, RESULT_NAME)
    rt.storage.put_bytes(key, png, "image/png")
    return {
        "keys": {"image": key},
        "width": result.image.width,
        "height": result.image.height,
        "bytes": len(png),
        "content_type": "image/png",
        "metrics": _jsonable(result.metrics),
    }


def store_train_result(rt: JobRuntime, spec, result, job_id: str) -> tuple[dict[str, Any], str]:
    from shared.storage import checkpoint_key

    ckpt = Path(result.checkpoint)
    checksum = sha256_file(ckpt)
    model_id = hashlib.sha256(f"{job_id}:{checksum}".encode()).hexdigest()[:32]  # stable across retries
    key = model_key(rt.tenant, model_id)
    rt.storage.upload_file(ckpt, key)
    config: dict[str, Any] = {}
    preprocessing: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        from shared.engine.checkpoint import load_checkpoint

        payload = load_checkpoint(ckpt)
        config = _jsonable(payload.get("config") or {})
        preprocessing = _jsonable(payload.get("preprocessing") or {})
    model = model_registry.register_model(
        name=spec.name,
        kind=result.kind,
        checksum=checksum,
        storage_key=key,
        tenant=rt.tenant,
        style_names=list(result.style_names),
        preprocessing=preprocessing,
        config=config,
        size_bytes=ckpt.stat().st_size,
        created_by_job=job_id,
        model_id=model_id,
        replace=_owned_by(rt.tenant, spec.name, job_id),
    )
    keys = {"model": key, "checkpoint": checkpoint_key(rt.tenant, job_id)}
    if result.loss_curve_png:
        loss_key = result_key(rt.tenant, job_id, "loss.png")
        rt.storage.put_bytes(loss_key, result.loss_curve_png, "image/png")
        keys["image"] = loss_key
        keys["loss_curve"] = loss_key
    return {
        "keys": keys,
        "model_id": model.id,
        "model_name": spec.name,
        "kind": result.kind,
        "style_names": list(result.style_names),
        "metrics": _jsonable(result.metrics),
    }, model.id


def _owned_by(tenant: str, name: str, job_id: str) -> bool:
    """True when ``name`` is free or already registered by this job (a retried job may
    replace its own model, never another job's)."""
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
        raise Conflict(f"a model named {name!r} already exists ({existing.id}); train under another name",
                       model_id=existing.id)  # fmt: skip


def _problem(err: StylefarmError, job_id: str) -> dict[str, Any]:
    return err.to_problem(instance=f"/v1/jobs/{job_id}")


def _finish(fn, *args, **kwargs) -> None:
    """Call a final-status function; losing a race (InvalidTransition) is only logged."""
    try:
        fn(*args, **kwargs)
    except InvalidTransition as exc:
        log.warning("%s", exc)


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_RETRIES, acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)  # fmt: skip
def run_job(self: Task, job_id: str) -> str:
    jlog = JobLog(log, {"job_id": job_id})
    worker_name = self.request.hostname or process_state.worker_name()
    task_id = self.request.id
    try:
        job = store.claim_job(job_id, task_id=task_id, worker=worker_name)
    except StylefarmError as exc:
        if exc.retryable and self.request.retries < MAX_RETRIES:
            jlog.warning("claim failed (%s); retrying", exc)
            raise self.retry(countdown=backoff_s(self.request.retries), max_retries=MAX_RETRIES)
        raise
    if job is None:
        jlog.info("not claimable (finished, canceled or held by another task); dropping message")
        return "skipped"

    settings = get_settings()
    storage = get_storage(settings)
    soft_s, _hard_s = TIME_LIMITS.get(job.method, (None, None))
    rt = JobRuntime(job_id=job_id, tenant=job.tenant, settings=settings, storage=storage,
                    soft_limit_s=soft_s, deadline=(time.monotonic() + soft_s) if soft_s else None)  # fmt: skip
    jlog.info("claimed by %s (task %s, attempt %s, method %s)", worker_name, task_id, job.attempts, job.method)
    started = time.monotonic()
    try:
        spec = parse_spec(job.spec)
        with tempfile.TemporaryDirectory(prefix=f"stylefarm-{job_id}-") as tmp, soft_time_limit(soft_s):
            work_dir = Path(tmp)
            if job.method in TRAINING_METHODS:
                check_model_name_free(job.tenant, spec.name, job_id)
                rt.restore_checkpoint(work_dir)
            process_state.warm_up(job.method)
            ctx = rt.context(work_dir, process_state.device(), settings.precision)
            from shared.engine import run_job as engine_run_job

            result = engine_run_job(spec, ctx)
            if job.method in TRAINING_METHODS:
                result_dict, model_id = store_train_result(rt, spec, result, job_id)
            else:
                result_dict, model_id = store_render_result(rt, result), None
        result_dict["seconds"] = round(time.monotonic() - started, 3)
        result_dict["worker"] = worker_name
        _finish(store.succeed_job, job_id, result_dict, model_id, task_id=task_id)
        jlog.info("succeeded in %.1fs", time.monotonic() - started)
        return "succeeded"
    except Retry:
        raise
    except JobCanceled:
        jlog.info("canceled after %.1fs", time.monotonic() - started)
        _finish(store.mark_canceled, job_id, task_id=task_id)
        return "canceled"
    except SoftTimeLimitExceeded:
        err = TimeLimitExceeded("the job ran longer than its time limit and was stopped", limit_s=soft_s)
        jlog.warning("%s", err)
        _finish(store.fail_job, job_id, _problem(err, job_id), task_id=task_id)
        return "failed"
    except StylefarmError as err:
        if err.retryable:
            problem = _problem(err, job_id)
            if self.request.retries >= MAX_RETRIES:
                jlog.error("giving up after %d retries: %s", self.request.retries, err)
                _finish(store.fail_job, job_id, problem, task_id=task_id)
                return "failed"
            delay = backoff_s(self.request.retries)
            jlog.warning("transient error (%s); requeued, retry %d in %ds", err, self.request.retries + 1, delay)
            try:
                store.requeue_job(job_id, problem, task_id=task_id)
            except Exception as exc:  # DB down too: the retry message still comes back
                jlog.warning("requeue failed: %s", exc)
            raise self.retry(countdown=delay, max_retries=MAX_RETRIES)
        jlog.info("failed: %s (%s)", err.detail, err.slug)
        _finish(store.fail_job, job_id, _problem(err, job_id), task_id=task_id)
        return "failed"
    except Exception as exc:  # a bug or an unexpected library error: fail, never leak a traceback
        jlog.exception("unexpected error")
        err = EngineError(f"the job failed unexpectedly ({type(exc).__name__}: {str(exc)[:500]})")
        _finish(store.fail_job, job_id, _problem(err, job_id), task_id=task_id)
        return "failed"
