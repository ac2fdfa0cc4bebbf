"""The workers' Prometheus metrics, served at ``/metrics`` on ``Settings.worker_metrics_port``
(0 = off) by each worker's main process.

Jobs run in Celery's prefork pool processes, so prometheus-client runs in multiprocess mode:
``serve`` (the main process, at ``worker_init``, before the pool forks) empties the worker's
``PROMETHEUS_MULTIPROC_DIR`` (the one in the environment, or a fresh temporary folder removed
at shutdown), every pool process writes its samples there, and a scrape adds them up. A pool
process that exits is marked dead (``worker_process_shutdown``), one that was killed is found
dead at the next scrape (``shared.metrics.multiprocess_registry``): its live gauges go, its
counts stay. Instruments are created on first use in the process that records, after the
folder is in the environment (prometheus-client picks its store when first imported).

Per job (``stylefarm.run_job`` tasks; ``task_started`` / ``task_finished`` run on Celery's
``task_prerun`` / ``task_postrun`` in the pool process):

* ``stylefarm_job_duration_seconds{method, outcome}``: the task's run time, for every outcome
  (``succeeded``, ``failed``, ``canceled``, ``retried``; ``requeued`` when graceful leave handed
  the job back, ``lease-lost`` when its lease was taken back; ``error`` when the task itself raised);
  a message for a job another task holds or that has finished is not counted.
* ``stylefarm_job_failures_total{method, problem_type}`` and
  ``stylefarm_job_retries_total{method, problem_type}``: from the problem the job's row holds.
* ``stylefarm_job_progress_writes_total{method}``: progress rows written
  (``worker.job_runtime``).
* ``stylefarm_worker_input_reads_total{source}``: inputs read by jobs, ``memory`` when the
  process still had the bytes (``worker.input_cache``), ``storage`` otherwise.
* ``stylefarm_job_peak_rss_bytes{method}``: the pool process's resident-memory high-water
  mark during the job (reset when the job starts, through ``/proc/self/clear_refs``; where
  that is not allowed, the process's peak so far), and
  ``stylefarm_job_peak_cuda_allocated_bytes{method}``: ``torch.cuda.max_memory_allocated``
  on a CUDA worker.
* ``stylefarm_worker_jobs_running`` and ``stylefarm_worker_pool_processes``: live gauges.

The task's log fields (``job_id``, ``worker``) are bound for the task's duration here too; the
task adds ``tenant`` and ``method`` once it has read the job (``shared.logs``).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextvars import Token
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared import logs
from shared.broker.celery_config import RUN_JOB_TASK_NAME
from shared.metrics import (
    JOB_SECONDS_BUCKETS,
    MEMORY_BYTES_BUCKETS,
    UNKNOWN,
    multiprocess_dir,
    multiprocess_registry,
    prepare_multiprocess_dir,
    problem_type_label,
)
from shared.settings import Settings

log = logging.getLogger("stylefarm.worker.metrics")

#: ``execute_job``'s return values that are outcomes of a run (``skipped`` is not).
RUN_OUTCOMES = ("succeeded", "failed", "canceled", "requeued", "lease-lost")


@dataclass(frozen=True)
class Instruments:
    duration: Any
    failures: Any
    retries: Any
    progress_writes: Any
    input_reads: Any
    peak_rss: Any
    peak_cuda: Any
    jobs_running: Any
    pool_processes: Any


@lru_cache(maxsize=1)
def instruments() -> Instruments:
    """This process's instruments, created on first use (see the module docstring)."""
    from prometheus_client import Counter, Gauge, Histogram

    def histogram(name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> Any:
        return Histogram(name, doc, labels, buckets=buckets, registry=None)

    return Instruments(
        duration=histogram(
            "stylefarm_job_duration_seconds",
            "Seconds a worker spent on a job's run, by outcome",
            ["method", "outcome"],
            JOB_SECONDS_BUCKETS,
        ),
        failures=Counter(
            "stylefarm_job_failures_total", "Jobs failed, by problem type", ["method", "problem_type"], registry=None
        ),
        retries=Counter(
            "stylefarm_job_retries_total",
            "Runs requeued for a retry after a transient error, by problem type",
            ["method", "problem_type"],
            registry=None,
        ),
        progress_writes=Counter(
            "stylefarm_job_progress_writes_total", "Progress rows written", ["method"], registry=None
        ),
        input_reads=Counter(
            "stylefarm_worker_input_reads_total", "Inputs read by jobs, by where the bytes came from", ["source"],
            registry=None,
        ),
        peak_rss=histogram(
            "stylefarm_job_peak_rss_bytes",
            "Resident memory high-water mark of the process during a job",
            ["method"],
            MEMORY_BYTES_BUCKETS,
        ),
        peak_cuda=histogram(
            "stylefarm_job_peak_cuda_allocated_bytes",
            "torch.cuda.max_memory_allocated during a job",
            ["method"],
            MEMORY_BYTES_BUCKETS,
        ),
        jobs_running=Gauge(
            "stylefarm_worker_jobs_running", "Jobs running now", registry=None, multiprocess_mode="livesum"
        ),
        pool_processes=Gauge(
            "stylefarm_worker_pool_processes", "Pool processes alive", registry=None, multiprocess_mode="livesum"
        ),
    )


# --- the server, in the worker's main process ---------------------------------------------


@dataclass
class _Server:
    httpd: Any  # None when the port could not be bound
    own_dir: Path | None  # a temporary folder this process made (removed at shutdown)


_server: _Server | None = None


def serve(settings: Settings) -> int | None:
    """Start ``/metrics`` on ``settings.worker_metrics_port`` (main process, before the pool
    forks); returns the port, or None when it is off or could not bind (logged)."""
    global _server
    if not settings.worker_metrics_port or _server is not None:
        return None
    own_dir = None
    path = multiprocess_dir()
    if path is None:
        path = own_dir = Path(tempfile.mkdtemp(prefix="stylefarm-metrics-"))
    prepare_multiprocess_dir(path)
    from prometheus_client import start_http_server

    try:
        httpd, _thread = start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=multiprocess_registry(path)
        )
    except OSError as exc:
        log.error(
            "worker metrics: cannot listen on %s:%s (%s); metrics are off",
            settings.worker_metrics_host,
            settings.worker_metrics_port,
            exc,
        )
        _server = _Server(None, own_dir)  # the folder still goes at shutdown
        return None
    _server = _Server(httpd, own_dir)
    log.info(
        "worker metrics at http://%s:%s/metrics (samples in %s)",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
        path,
    )
    return settings.worker_metrics_port


def stop_serving() -> None:
    global _server
    if _server is None:
        return
    if _server.httpd is not None:
        with contextlib.suppress(Exception):
            _server.httpd.shutdown()
    if _server.own_dir is not None:
        shutil.rmtree(_server.own_dir, ignore_errors=True)
    _server = None


# --- pool processes -------------------------------------------------------------------------


def pool_process_started() -> None:
    if multiprocess_dir() is not None:
        instruments().pool_processes.set(1)


def pool_process_stopped(pid: int) -> None:
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(path))


# --- peak memory ------------------------------------------------------------------------------


def reset_peak_memory() -> None:
    """Start a new high-water mark for the resident set (Linux >= 4.0) and CUDA allocations."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    torch = _cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    """The resident-set high-water mark (``VmHWM``), else the process's peak from getrusage."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def peak_cuda_bytes() -> int | None:
    torch = _cuda_torch()
    return int(torch.cuda.max_memory_allocated()) if torch is not None else None


def _cuda_torch() -> Any:
    """torch, when this process has already initialized CUDA (never imports or starts it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch


# --- tasks --------------------------------------------------------------------------------------


@dataclass
class _Run:
    job_id: str | None
    started: float
    log_token: Token[Any]


_runs: dict[str, _Run] = {}


def task_started(task_id: str, task: Any, args: Sequence[Any] | None) -> None:
    """``task_prerun``: bind the log fields, start the clock and the memory high-water marks."""
    if getattr(task, "name", None) != RUN_JOB_TASK_NAME or not task_id:
        return
    job_id = str(args[0]) if args else None
    token = logs.bind(job_id=job_id, worker=getattr(task.request, "hostname", None))
    reset_peak_memory()
    instruments().jobs_running.inc()
    _runs[task_id] = _Run(job_id, time.monotonic(), token)


def task_finished(task_id: str, retval: Any, state: str | None) -> None:
    """``task_postrun``: record the run and unbind the log fields."""
    run = _runs.pop(task_id, None) if task_id else None
    if run is None:
        return
    try:
        ins = instruments()
        ins.jobs_running.dec()
        outcome = run_outcome(retval, state)
        if outcome is None:  # not claimed: another task holds the job, or it has finished
            return
        method = logs.current_fields().get("method") or UNKNOWN  # unknown: the claim itself failed
        ins.duration.labels(method, outcome).observe(time.monotonic() - run.started)
        ins.peak_rss.labels(method).observe(peak_rss_bytes())
        cuda = peak_cuda_bytes()
        if cuda is not None:
            ins.peak_cuda.labels(method).observe(cuda)
        if outcome in ("failed", "retried"):
            counter = ins.failures if outcome == "failed" else ins.retries
            counter.labels(method, _problem_type(run.job_id)).inc()
    except Exception:  # metrics never break a job
        log.exception("recording the metrics of task %s failed", task_id)
    finally:
        logs.reset(run.log_token)


def run_outcome(retval: Any, state: str | None) -> str | None:
    """The outcome label of a finished ``execute_job`` task, None when it ran nothing."""
    if state == "SUCCESS":
        return retval if retval in RUN_OUTCOMES else None
    if state == "RETRY":
        return "retried"
    if state == "FAILURE":
        return "error"
    return None


def _problem_type(job_id: str | None) -> str:
    """The type of the problem the job's row holds (a retried job keeps its last one)."""
    if job_id is None:
        return UNKNOWN
    from shared.jobs import store

    try:
        return problem_type_label(store.get_job(job_id).error)
    except Exception:
        return UNKNOWN


def count_input_read(from_memory: bool) -> None:
    """A job read an input: from the process's memory (``worker.input_cache``) or from storage."""
    instruments().input_reads.labels("memory" if from_memory else "storage").inc()


def count_progress_write() -> None:
    """A progress row was written for the job running in this context."""
    instruments().progress_writes.labels(logs.current_fields().get("method") or UNKNOWN).inc()
