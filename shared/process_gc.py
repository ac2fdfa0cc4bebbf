"""Long-lived processes move their start-up objects out of the garbage collector's way.

CPython's cyclic collector runs a full (generation 2) collection whenever enough new
long-lived objects have piled up, and a full collection walks every tracked object while the
process holds the GIL: a pause for every request or step in flight. Measured here
(2026-12-07, one core of this machine): the API process holds ~139,000 tracked objects
after start-up (FastAPI, pydantic, SQLAlchemy, boto3), and a full collection of them took
76 ms; a worker process with torch and the engine imported, ~410,000 and 190 ms. During one
``bench/service.py`` run the API ran two full collections, of 125 and 171 ms, the size of the
create requests' p99.

Callers: the API once its start-up is done (``api.main``); a worker pool process after the
first job of each method has ended (``worker.process_state.freeze_after_job``, on Celery's
``task_postrun``: torch, the engine module and the networks that job loaded).

``gc.freeze()`` (Python 3.7+) moves every object alive into a permanent generation that
collections skip. Start-up objects (modules, classes, routes, schemas, networks) live as long
as the process anyway, so freezing them after start-up costs nothing but the cycles among
them that later become garbage, which stay until the process exits: none are expected, and
reference counting still frees everything acyclic. Later objects are collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive out of future collections; returns how
    many objects are frozen in all (``gc.get_freeze_count``). Call it after start-up work, and
    again after a large lazy import has settled (after a worker's first job of a method)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_objects"]
