"""This worker in the farm's fleet registry (``shared.broker.fleet``, in the broker's Redis).

``worker.celery_app`` calls these from Celery signals:

* ``remember_identity`` (``celeryd_after_setup``, main process, before the pool forks): the
  worker's id (its Celery hostname, ``name@host``) and the queues it consumes (``-Q``); the
  pool processes inherit both.
* ``start_heartbeat`` (``worker_ready``, main process): a daemon thread writes the worker's
  record every ``Settings.worker_heartbeat_s`` (host, pid, queues, state, started_at); the
  record expires after three missed heartbeats, so a killed worker disappears on its own.
* ``mark_stopping`` (``worker_shutting_down``) and ``leave`` (``worker_shutdown``): state
  ``stopping``, then the record is removed at once.
* ``report_device`` (``worker_process_init``, each pool process): device, its name and memory.
* ``job_started`` / ``job_finished`` (``task_prerun`` / ``task_postrun``, the pool process
  running the task): the current job, and after it the models the process's jobs loaded.

The registry is advisory: every call here catches its errors and logs them, so a Redis
hiccup never fails a job or stops a worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from shared.broker import fleet
from shared.settings import get_settings

log = logging.getLogger("stylefarm.worker.fleet")

#: Models listed per pool process (the engine keeps up to 4 per kind in memory).
MAX_MODELS = 8

_identity: dict[str, Any] = {}  # worker_id, queues, started_at: set in the main process, inherited
_heartbeat: _Heartbeat | None = None
_models: list[str] = []  # this pool process's, most recent first


def worker_id() -> str | None:
    return _identity.get("worker_id")


def _client() -> Any:
    return fleet.client_for(get_settings().broker_url)


def _ttl() -> float:
    return fleet.ttl_s(get_settings().worker_heartbeat_s)


def _best_effort(what: str, fn: Any, *args: Any) -> None:
    client = _client()
    wid = worker_id()
    if client is None or wid is None:
        return
    try:
        fn(client, wid, *args)
    except Exception as exc:  # the registry is advisory
        log.warning("fleet registry: %s failed: %s: %s", what, type(exc).__name__, exc)


# --- main process ----------------------------------------------------------------------


def remember_identity(hostname: str, queues: Iterable[str]) -> None:
    _identity.update(worker_id=hostname, queues=sorted(queues), started_at=round(time.time(), 3))


def _main_fields(state: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": _identity.get("queues", []),
        "started_at": _identity.get("started_at", time.time()),
        "state": state,
    }


class _Heartbeat(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(name="fleet-heartbeat", daemon=True)
        self.interval_s = interval_s
        self.state = "ready"
        self.stopped = threading.Event()

    def beat(self) -> None:
        _best_effort("heartbeat", fleet.heartbeat, _main_fields(self.state), _ttl())

    def run(self) -> None:
        self.beat()
        while not self.stopped.wait(self.interval_s):
            self.beat()


def start_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is not None or worker_id() is None:
        return
    _heartbeat = _Heartbeat(get_settings().worker_heartbeat_s)
    _heartbeat.start()
    log.info("worker %s registered in the fleet (queues %s)", worker_id(), ",".join(_identity.get("queues", [])))


def mark_stopping() -> None:
    if _heartbeat is not None:
        _heartbeat.state = "stopping"
        _heartbeat.beat()


def leave() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stopped.set()
        _heartbeat.join(timeout=fleet.SOCKET_TIMEOUT_S * 2)
        _heartbeat = None
    _best_effort("unregister", fleet.unregister)


# --- pool processes --------------------------------------------------------------------


def _device_fields(device: str) -> dict[str, Any]:
    """The device's kind, name and memory (CUDA: the GPU's; CPU: the machine's)."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return {"device": device, "device_name": props.name, "memory_bytes": int(props.total_memory)}
    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"device": device, "device_name": name or "cpu", "memory_bytes": int(memory)}


def report_device() -> None:
    from worker import process_state

    try:
        fields = _device_fields(process_state.device())
    except Exception as exc:
        log.warning("fleet registry: cannot describe the device: %s", exc)
        return
    _best_effort("device", fleet.set_fields, fields, _ttl())


def job_started(job_id: str) -> None:
    _best_effort("current job", fleet.set_current_job, os.getpid(), job_id, _ttl())


def _job_models(job_id: str) -> list[str]:
    from shared.jobs import store
    from shared.jobs.methods import parse_spec

    try:
        return [ref.ref for ref in parse_spec(store.get_job(job_id).spec).model_refs()]
    except Exception:  # a job that is gone or unreadable names no models
        return []


def job_finished(job_id: str) -> None:
    _best_effort("current job", fleet.set_current_job, os.getpid(), None, _ttl())
    used = _job_models(job_id)
    if not used:
        return
    _models[:] = [*used, *[m for m in _models if m not in used]][:MAX_MODELS]
    _best_effort("models", fleet.set_fields, {f"{fleet.MODELS_FIELD_PREFIX}{os.getpid()}": list(_models)}, _ttl())
