"""Liveness and readiness probes.

``/healthz`` answers from the event loop: it needs no thread, no database, nothing, so it
answers while every worker thread of the API waits on a hung dependency.

``/readyz`` checks the database, the broker and the storage, each in its own thread of a
small pool of its own (never the request thread pool), and answers within
``Settings.readiness_deadline_s`` whatever they do: a check still running at the deadline
counts as failed ("timed out") and the 503 problem names it. Concurrent calls share one
round of checks, and a round's answer is reused for ``CACHE_S``; a check that hangs is not
started again while it still runs, so a hung dependency holds at most one thread per
component, however often the probe is called.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from api.problems import problem_responses
from shared.db.session import session_scope
from shared.errors import RetryableError
from shared.settings import Settings
from shared.storage import Storage

router = APIRouter(tags=["health"])
BROKER_TIMEOUT_S = 1.0
#: A round of checks is reused this long (probes from many replicas and load balancers).
CACHE_S = 1.5


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> str:
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    return "ok"


def _check_broker(settings: Settings) -> str:
    url = settings.broker_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "skipped (not a Redis URL)"
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_storage(storage: Storage) -> str:
    storage.probe()  # a real write, read-back and delete: a read-only store is not "ready"
    return "ok"


class Readiness:
    """Runs the named checks off the request pool, with a deadline, one round at a time."""

    def __init__(self, checks: dict[str, Callable[[], str]], deadline_s: float, cache_s: float = CACHE_S) -> None:
        self.checks = checks
        self.deadline_s = deadline_s
        self.cache_s = cache_s
        self._executor = concurrent.futures.ThreadPoolExecutor(len(checks), thread_name_prefix="readyz")
        self._running: dict[str, tuple[float, concurrent.futures.Future[str]]] = {}
        self._running_lock = threading.Lock()
        self._round: asyncio.Task[dict[str, str]] | None = None
        self._round_done_at = float("-inf")

    def _start(self, name: str) -> tuple[float, concurrent.futures.Future[str]]:
        """The check's running future: a new one, unless the last one has not finished."""
        with self._running_lock:
            running = self._running.get(name)
            if running is None or running[1].done():
                running = (time.monotonic(), self._executor.submit(self.checks[name]))
                self._running[name] = running
            return running

    async def _run_round(self) -> dict[str, str]:
        started = {name: self._start(name) for name in self.checks}
        waiting = {asyncio.wrap_future(future): name for name, (_, future) in started.items()}
        await asyncio.wait(waiting, timeout=self.deadline_s)
        outcomes: dict[str, str] = {}
        for wrapped, name in waiting.items():
            if not wrapped.done():
                since = time.monotonic() - started[name][0]
                outcomes[name] = f"error: timed out (no answer for {since:.1f}s)"
            elif (exc := wrapped.exception()) is not None:
                outcomes[name] = f"error: {type(exc).__name__}: {exc}"[:300]
            else:
                outcomes[name] = wrapped.result()
        return outcomes

    async def checks_now(self) -> dict[str, str]:
        """The outcome of every check: of the round in flight, of one that ended less than
        ``cache_s`` ago, or of a new round."""
        loop_now = time.monotonic()
        if self._round is None or (self._round.done() and loop_now - self._round_done_at >= self.cache_s):
            self._round = asyncio.ensure_future(self._run_round())
            self._round.add_done_callback(lambda _t: self._set_done_at())
        return await asyncio.shield(self._round)

    def _set_done_at(self) -> None:
        self._round_done_at = time.monotonic()


def readiness_for(request: Request) -> Readiness:
    """The app's one ``Readiness`` (created on first use)."""
    state = request.app.state
    readiness: Readiness | None = getattr(state, "readiness", None)
    if readiness is None:
        settings: Settings = state.settings
        storage: Storage = state.storage
        readiness = Readiness(
            {
                "database": _check_database,
                "broker": lambda: _check_broker(settings),
                "storage": lambda: _check_storage(storage),
            },
            deadline_s=settings.readiness_deadline_s,
        )
        state.readiness = readiness
    return readiness


@router.get("/readyz", summary="Database, broker and storage are reachable", responses=problem_responses(503))
async def readyz(request: Request) -> dict[str, Any]:
    """200 with every check "ok", or a 503 problem whose ``checks`` say what failed, within
    ``Settings.readiness_deadline_s`` (a check that has not answered by then failed)."""
    checks = await readiness_for(request).checks_now()
    failed = [name for name, outcome in checks.items() if outcome.startswith("error")]
    if failed:
        raise RetryableError(f"Not ready: {', '.join(failed)} unavailable.", checks=checks)
    return {"status": "ok", "checks": checks}
