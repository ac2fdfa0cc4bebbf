"""The worker's Celery app: ``celery -A worker.celery_app worker -Q gpu,cpu --concurrency 1 --pool prefork``.

The configuration is the same dict the API's client app uses (``shared.broker.celery_config``).
Start-up, in each pool process (``worker_process_init``): forget SQL connections and broker
clients inherited from the parent, run the migrations (a no-op when at head; safe when several
workers start at once), pick the device, remove the job folders of killed pool processes
(``worker.scratch``). Models load lazily on the first job of each
method and stay cached in the process.

The fleet registry (``worker.fleet``): the worker registers itself in Redis and heartbeats
from its main process; each pool process reports its device and its current job.

The main process also runs the sweeper (``worker.sweeper.SweeperThread``: expired leases,
queued jobs without a message) from the moment the worker is ready, and on SIGTERM
(``worker_shutting_down``) announces the graceful leave to its pool processes
(``worker.leave``) and stops the sweeper.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

from celery import Celery, signals

from shared.broker.celery_config import RUN_JOB_TASK_NAME, celery_config
from shared.settings import get_settings
from worker import fleet, leave  # leave maps its flag now, in the main process, before the pool forks

log = logging.getLogger("stylefarm.worker")

app = Celery("stylefarm")
app.conf.update(**celery_config(get_settings()))
app.conf.imports = ("worker.tasks", "worker.sweeper", "worker.webhooks")


@signals.worker_init.connect
def _on_worker_init(**_kwargs) -> None:
    """Main worker process: migrate once before forking, so a broken database stops the
    worker at start with a clear error instead of failing every job."""
    from shared.db.migrate import upgrade
    from shared.db.session import dispose_engines

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    dispose_engines()  # no connections inherited by the pool children
    # Import torch and the engine once here: forked pool processes then start in
    # milliseconds (a respawned process must report up within worker_proc_alive_timeout).
    # Nothing touches CUDA before the fork; the device is picked in each child.
    import torch  # noqa: F401

    import shared.engine  # noqa: F401

    # Built-in models (and their style thumbnails) are registered by the first worker that
    # starts; later starts find them in the table and return at once. It runs in a child
    # process: rendering here would start torch's OpenMP thread pool in the parent, and
    # pool processes forked from it would then hang on their first parallel operation.
    subprocess.run([sys.executable, "-m", "worker.bootstrap"], check=False, timeout=600)


@signals.worker_process_init.connect
def _on_worker_process_init(**_kwargs) -> None:
    from shared.broker.client import forget_clients
    from shared.db.migrate import upgrade
    from shared.db.session import dispose_engines
    from worker import process_state, scratch

    dispose_engines(close=False)  # the main process's connections (its sweeper's) stay the main's
    forget_clients()
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    process_state.init_process(settings.device)
    scratch.sweep_orphans()  # job folders of pool processes that were killed (this one's predecessor)


# --- the fleet registry (worker.fleet): who this worker is, its heartbeat, its current job ---


@signals.celeryd_after_setup.connect
def _fleet_identity(sender: str, instance, **_kwargs) -> None:
    fleet.remember_identity(sender, instance.app.amqp.queues.consume_from.keys())


@signals.worker_ready.connect
def _fleet_join(**_kwargs) -> None:
    fleet.start_heartbeat()


@signals.worker_shutting_down.connect
def _fleet_stopping(**_kwargs) -> None:
    fleet.mark_stopping()


@signals.worker_shutdown.connect
def _fleet_leave(**_kwargs) -> None:
    fleet.leave()


@signals.worker_process_init.connect
def _fleet_device(**_kwargs) -> None:
    fleet.report_device()


def _fleet_job(task, args, *, started: bool) -> None:
    """The pool process running a job task reports its current job (set, then cleared)."""
    if task is None or task.name != RUN_JOB_TASK_NAME or not args:
        return
    (fleet.job_started if started else fleet.job_finished)(str(args[0]))


@signals.task_prerun.connect
def _fleet_job_started(task=None, args=None, **_kwargs) -> None:
    _fleet_job(task, args, started=True)


@signals.task_postrun.connect
def _fleet_job_finished(task=None, args=None, **_kwargs) -> None:
    _fleet_job(task, args, started=False)


@signals.task_postrun.connect
def _freeze_after_first_job(**_kwargs: Any) -> None:
    from worker import process_state

    if get_settings().gc_freeze:
        process_state.freeze_after_job()


# --- the sweeper and graceful leave (main process) ----------------------------------------

_sweeper: Any = None  # worker.sweeper.SweeperThread once the worker is ready


@signals.worker_ready.connect
def _start_sweeper(**_kwargs: Any) -> None:
    global _sweeper
    from worker.sweeper import SweeperThread

    _sweeper = SweeperThread()
    _sweeper.start()


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: str = "", how: str = "", **_kwargs: Any) -> None:
    """SIGTERM / SIGINT / SIGQUIT: the pool processes learn that this worker leaves; the
    sweeper stops (the farm's other sweepers go on)."""
    leave.announce()
    log.warning("worker leaving (%s %s shutdown): running jobs finish within %.0fs or are handed back",
                sig, how, get_settings().shutdown_grace_s)
    if _sweeper is not None:
        _sweeper.stop()


@signals.setup_logging.connect
def _setup_logging(loglevel=None, **_kwargs) -> None:
    """JSON or text lines (``Settings.log_format``) with the worker's name; ``--loglevel`` wins."""
    from shared.logs import configure_logging
    from worker.process_state import worker_name

    configure_logging(get_settings(), service="worker", level=loglevel or None, static={"worker": worker_name()})


# --- metrics (worker.metrics): the server in the main process, samples from the pool ---------


@signals.worker_init.connect
def _serve_metrics(**_kwargs) -> None:
    from worker import metrics

    metrics.serve(get_settings())


@signals.worker_shutdown.connect
def _stop_serving_metrics(**_kwargs) -> None:
    from worker import metrics

    metrics.stop_serving()


@signals.worker_process_init.connect
def _count_pool_process(**_kwargs) -> None:
    from worker import metrics

    metrics.pool_process_started()


@signals.worker_process_shutdown.connect
def _forget_pool_process(**_kwargs) -> None:
    from worker import metrics

    metrics.pool_process_stopped(os.getpid())


@signals.task_prerun.connect
def _observe_task_start(task_id=None, task=None, args=None, **_kwargs) -> None:
    from worker import metrics

    metrics.task_started(task_id, task, args)


@signals.task_postrun.connect
def _observe_task_end(task_id=None, retval=None, state=None, **_kwargs) -> None:
    from worker import metrics

    metrics.task_finished(task_id, retval, state)
