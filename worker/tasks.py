"""The one Celery task, ``execute_job(job_id)``, sent by name as ``RUN_JOB_TASK_NAME``
(``"stylefarm.run_job"``).

Thin on purpose: claim the job (conditional UPDATE: a fencing token and a lease), build an
``EngineContext`` (``worker.job_runtime``) and keep the lease while the engine runs
(``shared.engine.run_engine``), store the outcome (``worker.result_store``), and map every
error to one of: succeeded / failed (problem details) / canceled / requeued + retried /
handed back / lease lost.

Outcomes:

* Fan-out (``worker.fanout``): a job of a method with a ``FanOut`` is split into child jobs
  (returns "waiting"), a child runs its piece (-> ``PieceOutcome``), a parent whose children
  all succeeded is assembled; after every child run the parent is settled.
* ``RenderResult``: stored as a PNG -> ``RenderOutcome`` (a ``RenderFile``: uploaded as is);
  ``TrainResult``: checkpoint uploaded and registered as a model -> ``TrainOutcome`` (``shared.jobs.outcomes``). The
  outcome, with the attempt's wall time and worker, becomes the job's ``result``
  (``succeed_job``), plus the ``model_id`` of a training job.
* ``JobCanceled`` -> ``mark_canceled``; non-retryable ``StylefarmError`` -> ``fail_job``
  with its problem; retryable errors -> ``requeue_job`` and a Celery retry with exponential
  backoff; ``requeue_job`` fails the job instead once it ran ``Settings.max_attempts`` times
  (the one attempt budget, counted at claim time); anything else -> ``fail_job`` with a
  generic engine-error problem (message, no traceback).
* Every write names the claim's fencing token. ``LeaseLost`` (the sweeper requeued the job
  after the lease expired, maybe another worker holds it now) stops the engine at its next
  step; the task then writes nothing more and lets the message go.
* Graceful leave (``worker.leave``): a message that arrives while the worker is leaving is
  put back unclaimed; a running job that would not end within ``Settings.shutdown_grace_s``
  is handed back: requeued with its lease released and sent again at once, so another
  worker claims it now (a training job uploads its last checkpoint first and resumes from it).
* A message delivered again (a worker process died, a visibility timeout passed) finds its
  job running under a live lease, or final, and is dropped: it never runs twice at once.
* A pool process killed mid-job (SIGKILL, the OOM killer): the worker's main process sees it
  die (``RunJobRequest.on_failure``, ``WorkerLostError``) and, since the holder is provably
  gone, requeues its job at once (``store.release_dead_process``, fenced with the dead claim's
  token) before Celery puts the message back, which then claims the queued job. Without this
  the job would wait for its lease to run out.
* Time limits: each method has a soft limit (``shared.jobs.methods``), enforced at the engine's
  step boundaries and by a SIGALRM timer; past it the job fails with a
  ``time-limit-exceeded`` problem. Celery's hard limit kills a stuck process; its lease then
  expires and the sweeper requeues the job (or fails it past the attempt budget).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from celery.worker.request import Request

from shared import logs
from shared.broker.celery_config import RUN_JOB_TASK_NAME
from shared.db.orm import Job
from shared.errors import (
    EngineError,
    InvalidTransition,
    JobCanceled,
    LeaseLost,
    StylefarmError,
    TimeLimitExceeded,
    WorkerLeft,
    WorkerLost,
    describe_unexpected,
)
from shared.jobs import store
from shared.jobs.methods import REGISTRY, parse_spec
from shared.jobs.outcomes import JobOutcome, TrainOutcome
from shared.jobs.status import JobStatus
from shared.settings import get_settings
from shared.storage import get_storage
from shared.webhooks.dispatch import notify_final
from worker import fanout, leave, process_state, scratch
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


def _finish(status: str, fn, *args, **kwargs) -> str:
    """Call a final-status function, then send the job's webhook event if it has one
    (``shared.webhooks.dispatch``); returns ``status``, or ``"lease-lost"`` when the write was
    refused (``LeaseLost``, ``InvalidTransition``: another claim or the sweeper moved the job on)."""
    try:
        job = fn(*args, **kwargs)
    except InvalidTransition as exc:
        log.warning("%s", exc)
        return "lease-lost"
    notify_final(job)
    return status


def _hand_back(job: Job, token: int, jlog: JobLog) -> str:
    """Graceful leave: requeue the job with its lease released and send it again at once."""
    from shared.broker.client import enqueue_job

    why = WorkerLeft(f"the worker running this job ({job.worker}) shut down and handed it back").to_problem()
    try:
        after = store.requeue_job(job.id, why, token=token, stage="handed back")
    except LeaseLost as exc:
        jlog.warning("%s", exc)
        return "lease-lost"
    if after.status != JobStatus.QUEUED.value:
        jlog.error("handed back after %d attempts, its budget: failed", after.attempts)
        notify_final(after)
        return after.status
    try:
        enqueue_job(job.id, job.queue, job.priority, method=job.method)
    except StylefarmError as exc:  # the broker is away: the sweeper sends the queued job once it is back
        jlog.warning("handed back, but not sent (%s); the sweeper will send it", exc)
    jlog.info("handed back (worker leaving); queued for another worker")
    return "requeued"


class RunJobRequest(Request):
    """The worker main process's view of one ``execute_job`` message."""

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, WorkerLostError):
            release_dead_holder(self.args[0] if self.args else self.kwargs.get("job_id"), self.id, self.hostname, exc)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def release_dead_holder(job_id: str | None, task_id: str, worker: str, exc: BaseException) -> None:
    """Requeue (or, past its budget, fail) the job of a pool process that died under it.
    Errors are logged only: the lease then runs out and the sweeper requeues the job."""
    if not job_id:
        return
    jlog = JobLog(log, job_id)
    why = WorkerLost(f"the worker process running this job ({worker}) died: {exc}").to_problem(
        instance=f"/v1/jobs/{job_id}"
    )
    try:
        job = store.release_dead_process(job_id, task_id=task_id, worker=worker, problem=why)
    except Exception as err:  # the database is away: the lease runs out instead
        jlog.warning("its pool process died; not requeued now (%s), the lease will run out", err)
        return
    if job is None:
        return
    if job.status == JobStatus.QUEUED.value:
        jlog.warning("its pool process died (%s); requeued at once", exc)
    else:
        jlog.error("its pool process died after %d attempts, its budget: failed", job.attempts)
        notify_final(job)


@app.task(name=RUN_JOB_TASK_NAME, bind=True, max_retries=None, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True, Request=RunJobRequest)
def execute_job(self: Task, job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the status it ended in ("skipped" when it is
    running under another claim or has finished; "lease-lost" when the lease was lost;
    "waiting" when it was split into child jobs). After a run of a child job its parent is
    settled (``worker.fanout.settle``): the last piece to succeed sends it to assembly."""
    parent: list[str] = []
    try:
        return _execute_job(self, job_id, parent)
    finally:
        if parent:
            try:
                fanout.settle(parent[0])
            except Exception as exc:  # the sweeper settles waiting parents on its next pass
                log.warning("job %s: parent %s not settled: %s", job_id, parent[0], exc)


def _execute_job(self: Task, job_id: str, parent: list[str]) -> str:
    jlog = JobLog(log, job_id)
    if leave.leaving():
        jlog.info("this worker is leaving; the message goes back to the queue unclaimed")
        raise Reject("worker leaving", requeue=True)
    worker_name = self.request.hostname or process_state.worker_name()
    task_id = self.request.id
    settings = get_settings()
    max_attempts = settings.max_attempts
    try:
        job = store.claim_job(job_id, task_id=task_id, worker=worker_name)
    except StylefarmError as exc:
        if exc.retryable and self.request.retries + 1 < max_attempts:
            jlog.warning("claim failed (%s); retrying", exc)
            raise self.retry(countdown=backoff_s(self.request.retries)) from exc
        raise
    if job is None:
        jlog.info("not claimable (running under a live lease, finished, canceled or out of attempts); dropping message")
        return "skipped"
    if job.parent_id is not None:
        parent.append(job.parent_id)
    logs.bind(tenant=job.tenant, method=job.method)  # log fields and metric labels; worker.metrics unbinds

    token = job.fencing_token
    storage = get_storage(settings)
    method = REGISTRY.get(job.method)  # None only for a stored method since removed: parse_spec fails it
    soft_s = method.soft_limit_s if method is not None else None
    rt = JobRuntime(job_id=job_id, tenant=job.tenant, settings=settings, storage=storage, token=token,
                    soft_limit_s=soft_s, deadline=(time.monotonic() + soft_s) if soft_s else None)
    jlog.info("claimed by %s (task %s, attempt %s, token %s, method %s)", worker_name, task_id, job.attempts, token,
              job.method)
    started = time.monotonic()
    try:
        with rt.keep_lease():
            spec = parse_spec(job.spec)
            with scratch.job_dir(job_id) as work_dir, soft_time_limit(soft_s):
                trains = method is not None and method.trains
                if trains:
                    check_model_name_free(job.tenant, trained_model_name(spec), job_id)
                    rt.restore_checkpoint(work_dir)
                process_state.warm_up(job.method)
                ctx = rt.context(work_dir, process_state.device(), settings.precision)
                stage = fanout.stage_of(job, method)
                outcome: JobOutcome | None = None
                if stage == fanout.PIECE and method is not None:
                    outcome = fanout.run_piece(job, spec, method, rt, ctx)
                elif stage == fanout.ASSEMBLE and method is not None:
                    result = fanout.assemble(job, spec, method, rt, ctx)
                elif stage == fanout.SPLIT and method is not None:
                    try:
                        children = fanout.split(job, spec, method, rt, ctx)
                    except LeaseLost:
                        raise
                    except InvalidTransition as exc:  # a cancel came before the split was recorded
                        raise JobCanceled(exc.detail) from None
                    if children is not None:
                        fanout.send_children(children, settings)
                        jlog.info("split into %d pieces in %.1fs; waiting for them", len(children),
                                  time.monotonic() - started)
                        return "waiting"
                if outcome is None:
                    if stage != fanout.ASSEMBLE:
                        from shared.engine import run_engine

                        result = run_engine(spec, ctx)
                    rt.check_lease()  # a stale holder must not overwrite the new holder's result
                    outcome = store_result(rt, spec, result)
        assert outcome is not None
        seconds = round(time.monotonic() - started, 3)
        # the attempt's time in read_input (inside the engine's metrics.seconds for fast and adain,
        # which read their inputs after starting their clock; bench/service.py takes it off)
        metrics = {**outcome.metrics, "input_seconds": round(rt.input_seconds, 4)}
        outcome = outcome.model_copy(update={"seconds": seconds, "worker": worker_name, "metrics": metrics})
        model_id = outcome.model_id if isinstance(outcome, TrainOutcome) else None
        status = _finish("succeeded", store.succeed_job, job_id, outcome.model_dump(mode="json"), model_id, token=token)
        jlog.info("%s in %.1fs", status, time.monotonic() - started)
        return status
    except Retry:
        raise
    except LeaseLost:
        jlog.warning("lease lost after %.1fs; stopped, nothing more written", time.monotonic() - started)
        return "lease-lost"
    except JobCanceled:
        if rt.lease_lost:
            jlog.warning("lease lost after %.1fs; stopped, nothing more written", time.monotonic() - started)
            return "lease-lost"
        if rt.handing_back:
            return _hand_back(job, token, jlog)
        jlog.info("canceled after %.1fs", time.monotonic() - started)
        return _finish("canceled", store.mark_canceled, job_id, token=token)
    except SoftTimeLimitExceeded:
        timeout = TimeLimitExceeded("the job ran longer than its time limit and was stopped", limit_s=soft_s)
        jlog.warning("%s", timeout)
        return _finish("failed", store.fail_job, job_id, _problem(timeout, job_id), token=token)
    except StylefarmError as err:
        if err.retryable:
            delay = backoff_s(self.request.retries)
            try:
                after = store.requeue_job(job_id, _problem(err, job_id), token=token)
            except LeaseLost as lost:
                jlog.warning("%s", lost)
                return "lease-lost"
            except Exception as down:  # DB down too: the lease runs out and the sweeper requeues the job
                jlog.warning("requeue failed: %s", down)
                raise self.retry(countdown=delay) from down
            if after.status != JobStatus.QUEUED.value:
                jlog.error("giving up after %d attempts: %s", after.attempts, err)
                notify_final(after)
                return after.status
            jlog.warning("transient error (%s); requeued, retry %d in %ds", err, self.request.retries + 1, delay)
            raise self.retry(countdown=delay) from err
        jlog.info("failed: %s (%s)", err.detail, err.slug)
        return _finish("failed", store.fail_job, job_id, _problem(err, job_id), token=token)
    except Exception as exc:  # a bug or an unexpected library error: fail, never leak a traceback
        jlog.exception("unexpected error")
        failure = EngineError(f"the job failed unexpectedly ({describe_unexpected(exc)})")
        return _finish("failed", store.fail_job, job_id, _problem(failure, job_id), token=token)
    finally:
        rt.release_caches()
