"""Graceful leave: the worker's main process tells its pool processes that it is shutting down.

On SIGTERM (scale-down, a rolling update, ``docker stop``, a pod eviction) Celery's main
process starts a warm shutdown: it stops taking messages and waits for its pool processes
to finish their tasks; the pool processes themselves get no signal. This module is how they
learn about it: an anonymous shared memory page, mapped when ``worker.celery_app`` is
imported in the main process and inherited by every pool process forked from it (Celery's
prefork pool forks). The main process writes the time the leave began
(``announce``, from Celery's ``worker_shutting_down`` signal); a pool process reads it
without any I/O (``since`` / ``leaving``) at every engine step (``JobRuntime.is_canceled``).

What a running job does then is ``JobRuntime.should_hand_back``'s decision: finish when it
ends within ``Settings.shutdown_grace_s``, else hand the job back at once (a training job
uploads its last checkpoint first), releasing its lease so another worker claims it.
"""

from __future__ import annotations

import mmap
import struct
import time

_FORMAT = "d"  # the leave's start, seconds since the epoch; 0.0 = not leaving
_page = mmap.mmap(-1, struct.calcsize(_FORMAT))  # MAP_SHARED | MAP_ANONYMOUS: shared with forked children


def announce(at: float | None = None) -> None:
    """Main process: this worker is leaving (idempotent; the first time counts)."""
    if since() is None:
        struct.pack_into(_FORMAT, _page, 0, time.time() if at is None else at)


def since() -> float | None:
    """When the leave began (``time.time()``), or ``None`` while the worker stays."""
    (at,) = struct.unpack_from(_FORMAT, _page, 0)
    return at or None


def leaving() -> bool:
    return since() is not None


def reset() -> None:
    """Back to staying (tests)."""
    struct.pack_into(_FORMAT, _page, 0, 0.0)
