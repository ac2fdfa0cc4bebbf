"""``GET /v1/jobs/{id}/events``: a job's status changes and progress as server-sent events.

Fed by the job row the workers already write (``shared.jobs.store.record_progress`` and the
status transitions): the stream reads the row's ``revision`` (one primary-key SELECT) every
``POLL_S`` seconds, and at once when the database says the row changed (``api.job_wakeups``:
on PostgreSQL a trigger's NOTIFY of a status change, delivered on commit; on SQLite any
commit). When the revision moved, it reads the row and sends one event::

    id: <revision>
    event: status | progress
    data: <the job as GET /v1/jobs/{id} returns it, plus "revision">

``revision`` is +1 on every write of the row, so ids are monotonic per job whatever the
clocks of the API and the workers say. The first event of a connection is a ``status``
event with the job's current state; afterwards an event is ``status`` when the status
changed and ``progress`` otherwise (a new preview image shows in ``links.preview``). States
that pass quicker than one read are coalesced (reads are at least ``MIN_READ_GAP_S`` apart):
the stream reports what the row says, so a job that ran faster than that may go from
``queued`` straight to ``succeeded``.

Resuming: a client that reconnects with ``Last-Event-ID: <revision>`` gets nothing until
the row moves past that revision, and then a ``status`` event with the current state, so
a status change made while it was away is never skipped. A comment line (``: keep-alive``)
is sent after ``KEEPALIVE_S`` seconds without events. The stream ends after the event that
carries a final status (``succeeded``, ``failed``, ``canceled``), or at once when a resuming
client already has that final revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, TenantDep
from api.job_wakeups import JobWakeups
from api.problems import problem_responses
from api.schemas import job_out
from shared.db.orm import Job
from shared.errors import StylefarmError
from shared.jobs import store
from shared.jobs.status import FINAL_STATUSES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_S = 0.5  # seconds between reads of the job's revision (progress); status changes wake the stream at once
MIN_READ_GAP_S = 0.01  # a stream reads its row at most 100 times a second, however often it is woken
KEEPALIVE_S = 15.0  # seconds without events before a keep-alive comment
RETRY_MS = 2000  # the reconnection delay the stream asks clients for

EVENT_STREAM = "text/event-stream"
_FINAL = frozenset(s.value for s in FINAL_STATUSES)


def parse_last_event_id(value: str | None) -> int | None:
    """The revision a resuming client has seen; None for a fresh connection (or an id this
    API never sent, which then gets the full current state)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def format_event(kind: str, job: Job, base: str) -> bytes:
    data = {"revision": job.revision, **job_out(job, base).model_dump(mode="json")}
    return f"id: {job.revision}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(job: Job, base: str, seen_revision: int | None, wakeups: JobWakeups) -> AsyncIterator[bytes]:
    """The event stream of ``job`` (already loaded and tenant-checked) for a client that has
    seen ``seen_revision`` (None: nothing yet)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    sent_status: str | None = None  # None: the next event is a status event
    last_sent = last_read = time.monotonic()
    current: Job | None = job
    with wakeups.watch(job.id) as woken:
        woken.set()  # a change between the handler's read and the watch: read again at once
        while True:
            if current is not None:
                if current.revision != seen_revision:
                    kind = "status" if current.status != sent_status else "progress"
                    yield format_event(kind, current, base)
                    sent_status, seen_revision, last_sent = current.status, current.revision, time.monotonic()
                if current.status in _FINAL:
                    return
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=min(POLL_S, KEEPALIVE_S))
            await asyncio.sleep(max(0.0, last_read + MIN_READ_GAP_S - time.monotonic()))
            woken.clear()  # before the read: a change committed after it wakes the next wait
            last_read = time.monotonic()
            try:
                revision = await run_in_threadpool(store.job_revision, job.id)
                if revision is None:
                    return  # the job is gone
                current = await run_in_threadpool(store.get_job, job.id) if revision != seen_revision else None
            except StylefarmError:
                return  # e.g. the database is unreachable: the client reconnects with Last-Event-ID


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses=problem_responses(401, 404, others={
        200: {
            "description": "Server-sent events: `status` and `progress`, each with `id: <revision>` and the job "
            "as JSON in `data`; `: keep-alive` comments; the stream ends after a final status.",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    }),
    summary="Watch a job: status changes and progress as server-sent events",
)
async def stream_job_events(
    job_id: str,
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None, Header(max_length=64, description="resume after this event id (a revision)")
    ] = None,
) -> StreamingResponse:
    """Status changes and progress of a job as they happen, resumable with ``Last-Event-ID``
    (see the module docstring for the exact protocol)."""
    job = await run_in_threadpool(store.get_job, job_id, tenant)  # 404 problem for another tenant's job
    return StreamingResponse(
        job_events(job, settings.public_url.rstrip("/"), parse_last_event_id(last_event_id),
                   request.app.state.job_wakeups),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
