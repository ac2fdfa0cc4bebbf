"""Per-process worker state: the device, lazy one-time warm-up, the worker's name.

Celery forks its pool processes from the main worker process; everything here is set up
in the child (``worker_process_init``), never inherited: CUDA cannot be used across a
fork and SQL connections must not be shared between processes.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading

from shared.jobs.methods import REGISTRY
from shared.process_gc import freeze_startup_objects

log = logging.getLogger("stylefarm.worker")

_device: str | None = None
_warmed: set[str] = set()
_freeze_pending = False  # a method was warmed up: freeze once its first job has ended
_lock = threading.Lock()


def worker_name() -> str:
    return os.environ.get("STYLEFARM_WORKER_NAME") or f"worker@{socket.gethostname()}"


def pick_device(preference: str = "auto") -> str:
    """CUDA when available, else CPU (``shared.engine.device`` decides when present)."""
    try:
        from shared.engine.device import pick_device as engine_pick

        return str(engine_pick(preference))
    except ImportError:  # pragma: no cover - engine without a device module
        import torch

        if preference in ("", "auto"):
            return "cuda" if torch.cuda.is_available() else "cpu"
        return preference


def init_process(preference: str = "auto") -> str:
    """Pick the device once for this process (called from ``worker_process_init``)."""
    global _device
    with _lock:
        _device = pick_device(preference)
        _warmed.clear()
    log.info("worker process %s uses device %s", os.getpid(), _device)
    return _device


def device() -> str:
    if _device is None:
        from shared.settings import get_settings

        return init_process(get_settings().device)
    return _device


def warm_up(method: str) -> None:
    """Import the method's engine module (named in ``shared.jobs.methods.REGISTRY``) once per
    process, and call its ``warm_up(device)`` when it has one; importing it (torch, networks)
    is the slow part, so later jobs of the same method start at once."""
    if method in _warmed:
        return
    with _lock:
        if method in _warmed:
            return
        entry = REGISTRY.get(method)
        if entry is not None:
            name = entry.engine_module
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                log.warning("engine module %s not importable: %s", name, exc)
                return  # run_engine will report it on the job
            hook = getattr(module, "warm_up", None)
            if callable(hook):
                try:
                    hook(device())
                except Exception as exc:  # warm-up is an optimization only
                    log.warning("warm-up of %s failed: %s", method, exc)
        _warmed.add(method)
        global _freeze_pending
        _freeze_pending = True  # after this job: freeze_after_job


def freeze_after_job() -> None:
    """After the first job of a method (``task_postrun``): torch, the engine module and the
    networks that job loaded stay for the process's life; move them out of the full
    collections' walk (~0.13-0.19 s each with torch imported; ``shared.process_gc``). Done
    after the job, not in it: the job's own objects are gone and its time is not charged."""
    global _freeze_pending
    if _freeze_pending:
        _freeze_pending = False
        frozen = freeze_startup_objects()
        log.info("worker process %s froze %d start-up objects out of the garbage collector's walk", os.getpid(), frozen)
