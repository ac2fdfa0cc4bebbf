"""The one Celery task, ``execute_job(job_id)``, sent by name as ``RUN_JOB_TASK_NAME``
(``"stylefarm.run_job"``).

Thin on purpose: claim the job (conditional UPDATE), build an ``EngineContext``
(``worker.job_runtime``), run the engine (``shared.engine.run_engine``), store the outcome
(``worker.result_store``), and map every error to one of: succeeded / failed (problem
details) / canceled / requeued + retried.

Outcomes:

* ``RenderResult``: stored as a PNG -> ``RenderOutcome``; ``TrainResult``: checkpoint
  uploaded and registered as a model -> ``TrainOutcome`` (``shared.jobs.outcomes``). The
  outcome, with the attempt's wall time and worker, becomes the job's ``result``
  (``succeed_job``), plus the ``model_id`` of a training job.
* ``JobCanceled`` -> ``mark_canceled``; non-retryable ``StylefarmError`` -> ``fail_job``
  with its problem; retryable errors -> ``requeue_job`` and a Celery retry with
  exponential backoff while ``Job.attempts < Settings.max_attempts`` (then ``fail_job``); anything else ->
  ``fail_job`` with a generic engine-error problem (message, no traceback).
* Time limits: each method has a soft limit (``shared.jobs.methods``), enforced at the engine's
  step boundaries and by a SIGALRM timer; past it the job fails with a
  ``time-limit-exceeded`` problem. Celery's hard limit kills a stuck process; the
  reconciler then fails the job.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from shared import logs
from shared.broker.celery_config import RUN_JOB_TASK_NAME
from shared.errors import (
    EngineError,
    InvalidTransition,
    JobCanceled,
    StylefarmError,
    TimeLimitExceeded,
)
from shared.jobs import store
from shared.jobs.methods import REGISTRY, parse_spec
from shared.jobs.outcomes import TrainOutcome
from shared.settings import get_settings
from shared.storage import get_storage
from shared.webhooks.dispatch import notify_final
from worker import process_state
from worker.celery_app import app
from worker.job_runtime import JobRuntime
from worker.result_store import check_model_name_free, store_result, trained_model_name

log = logging.getLogger("stylefarm.worker")

BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 300


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``job <id>:``."""

    def __init__(self, logger: logging.Logger, job_id: str) -> None:
        super().__init__(logger, {"job_id": job_id})
        self.job_id = job_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"job {self.job_id}: {msg}", kwargs


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
        raise TimeLimitExceeded(
            f"the job ran longer than its {seconds:.0f}s time limit and was stopped", limit_s=seconds
        )

    old = signal.signal(signal.SIGALRM, _alarm)
    # a little later than the cooperative deadline, which stops the engine more cleanly
    signal.setitimer(signal.ITIMER_REAL, seconds + 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _problem(err: StylefarmError, job_id: str) -> dict[str, Any]:
    return err.to_problem(instance=f"/v1/jobs/{job_id}")


def _finish(fn, *args, **kwargs) -> None:
    """Call a final-status function, then send the job's webhook event if it has one
    (``shared.webhooks.dispatch``); losing a race (InvalidTransition) is only logged."""
    try:
        job = fn(*args, **kwargs)
    except InvalidTransition as exc:
        log.warning("%s", exc)
        return
    notify_final(job)


@app.task(name=RUN_JOB_TASK_NAME, bind=True, max_retries=get_settings().max_attempts, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def execute_job(self: Task, job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the status it ended in ("skipped" when
    another task holds it or it has finished)."""
    jlog = JobLog(log, job_id)
    worker_name = self.request.hostname or process_state.worker_name()
    task_id = self.request.id
    settings = get_settings()
    max_attempts = settings.max_attempts
    try:
        job = store.claim_job(job_id, task_id=task_id, worker=worker_name)
    except StylefarmError as exc:
        if exc.retryable and self.request.retries + 1 < max_attempts:
            jlog.warning("claim failed (%s); retrying", exc)
            raise self.retry(countdown=backoff_s(self.request.retries), max_retries=max_attempts) from exc
        raise
    if job is None:
        jlog.info("not claimable (finished, canceled or held by another task); dropping message")
        return "skipped"
    logs.bind(tenant=job.tenant, method=job.method)  # log fields and metric labels; worker.metrics unbinds

    storage = get_storage(settings)
    method = REGISTRY.get(job.method)  # None only for a stored method since removed: parse_spec fails it
    soft_s = method.soft_limit_s if method is not None else None
    rt = JobRuntime(job_id=job_id, tenant=job.tenant, settings=settings, storage=storage,
                    soft_limit_s=soft_s, deadline=(time.monotonic() + soft_s) if soft_s else None)
    jlog.info("claimed by %s (task %s, attempt %s, method %s)", worker_name, task_id, job.attempts, job.method)
    started = time.monotonic()
    try:
        spec = parse_spec(job.spec)
        with tempfile.TemporaryDirectory(prefix=f"stylefarm-{job_id}-") as tmp, soft_time_limit(soft_s):
            work_dir = Path(tmp)
            trains = method is not None and method.trains
            if trains:
                check_model_name_free(job.tenant, trained_model_name(spec), job_id)
                rt.restore_checkpoint(work_dir)
            process_state.warm_up(job.method)
            ctx = rt.context(work_dir, process_state.device(), settings.precision)
            from shared.engine import run_engine

            result = run_engine(spec, ctx)
            outcome = store_result(rt, spec, result)
        seconds = round(time.monotonic() - started, 3)
        outcome = outcome.model_copy(update={"seconds": seconds, "worker": worker_name})
        model_id = outcome.model_id if isinstance(outcome, TrainOutcome) else None
        _finish(store.succeed_job, job_id, outcome.model_dump(mode="json"), model_id, task_id=task_id)
        jlog.info("succeeded in %.1fs", time.monotonic() - started)
        return "succeeded"
    except Retry:
        raise
    except JobCanceled:
        jlog.info("canceled after %.1fs", time.monotonic() - started)
        _finish(store.mark_canceled, job_id, task_id=task_id)
        return "canceled"
    except SoftTimeLimitExceeded:
        timeout = TimeLimitExceeded("the job ran longer than its time limit and was stopped", limit_s=soft_s)
        jlog.warning("%s", timeout)
        _finish(store.fail_job, job_id, _problem(timeout, job_id), task_id=task_id)
        return "failed"
    except StylefarmError as err:
        if err.retryable:
            problem = _problem(err, job_id)
            if job.attempts >= max_attempts:
                jlog.error("giving up after %d attempts: %s", job.attempts, err)
                _finish(store.fail_job, job_id, problem, task_id=task_id)
                return "failed"
            delay = backoff_s(self.request.retries)
            jlog.warning("transient error (%s); requeued, retry %d in %ds", err, self.request.retries + 1, delay)
            try:
                store.requeue_job(job_id, problem, task_id=task_id)
            except Exception as exc:  # DB down too: the retry message still comes back
                jlog.warning("requeue failed: %s", exc)
            raise self.retry(countdown=delay, max_retries=max_attempts) from err
        jlog.info("failed: %s (%s)", err.detail, err.slug)
        _finish(store.fail_job, job_id, _problem(err, job_id), task_id=task_id)
        return "failed"
    except Exception as exc:  # a bug or an unexpected library error: fail, never leak a traceback
        jlog.exception("unexpected error")
        failure = EngineError(f"the job failed unexpectedly ({type(exc).__name__}: {str(exc)[:500]})")
        _finish(store.fail_job, job_id, _problem(failure, job_id), task_id=task_id)
        return "failed"
    finally:
        rt.release_caches()
