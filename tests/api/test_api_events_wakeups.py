"""The event stream is woken by the database: a committed status change reaches the client
through PostgreSQL's LISTEN/NOTIFY (migration ``0008_job_notify``) or SQLite's ``data_version``
(``api.job_wakeups``), not through the stream's poll.

The streams here poll only every 30 s (``POLL_S``), so an event that arrives within a few
seconds was delivered by a wake-up; the test plays the worker through ``shared.jobs.store``,
which writes the job row as a worker process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.job_wakeups import JobWakeups
from api.routes import events
from shared.jobs import store
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings

from api_helpers import EnqueueRecorder, Stream, new_job, served_by_uvicorn

pytestmark = pytest.mark.timeout(120)

SLOW_POLL_S = 30.0
PROMPT_S = 5.0  # far below SLOW_POLL_S: only a notification delivers an event this soon


class Served:
    def __init__(self, url: str, app: Any, db_url: str) -> None:
        self.url, self.app, self.db_url = url, app, db_url

    @property
    def wakeups(self) -> Any:
        return self.app.state.job_wakeups


@pytest.fixture(params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path: Path, enqueued: EnqueueRecorder,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The real app on a fresh database, served by uvicorn, its streams polling every 30 s."""
    from api.main import create_app

    monkeypatch.setattr(events, "POLL_S", SLOW_POLL_S)
    monkeypatch.setattr(events, "KEEPALIVE_S", SLOW_POLL_S)
    if request.param == "postgresql":
        db_url = request.getfixturevalue("postgres_server").create_database(f"sf_events_{uuid.uuid4().hex[:10]}")
    else:
        db_url = f"sqlite:///{tmp_path / 'stylefarm.db'}"
    app = create_app(Settings(home=tmp_path, database_url=db_url, broker_url="redis://127.0.0.1:1/0"))
    with served_by_uvicorn(app) as url:
        yield Served(url, app, db_url)


def test_given_a_watched_job_when_a_worker_commits_status_changes_expect_each_event_at_once(served: Served) -> None:
    # given a queued job watched by a client, on an API that would poll its row only every 30 s
    job_id = new_job(served.url)
    stream = Stream(f"{served.url}/v1/jobs/{job_id}/events")
    first = stream.next(timeout=PROMPT_S)
    assert first is not None and first.data["status"] == "queued"
    time.sleep(0.2)  # past the stream's own first re-read, so only a wake-up can deliver what follows
    # when a worker claims the job, the client asks to cancel it and the worker stops
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    running = stream.next(timeout=PROMPT_S)
    store.request_cancel(job_id, "default")
    asked = stream.next(timeout=PROMPT_S)
    store.mark_canceled(job_id, token=token)
    done = stream.next(timeout=PROMPT_S)
    # expect every change as its own event, long before the stream's next poll, then the end
    assert running is not None and asked is not None and done is not None
    assert [(e.data["status"], e.data["cancel_requested"]) for e in (running, asked, done)] == [
        ("running", False), ("running", True), ("canceled", True)]
    assert stream.next(timeout=PROMPT_S) is None and stream.ended()
    stream.close()


def test_given_a_running_job_when_it_succeeds_after_progress_expect_the_final_event_at_once(served: Served) -> None:
    # given a running job watched by a client, its progress written since the last poll
    job_id = new_job(served.url)
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    stream = Stream(f"{served.url}/v1/jobs/{job_id}/events")
    first = stream.next(timeout=PROMPT_S)
    assert first is not None and first.data["status"] == "running"
    time.sleep(0.2)  # past the stream's own first re-read, so only a wake-up can deliver what follows
    store.record_progress(job_id, token=token, step=1, total=2, stage="render")
    # when it succeeds
    outcome = RenderOutcome(keys=RenderKeys(image=f"tenants/default/jobs/{job_id}/output.png"), width=8, height=8,
                            size_bytes=10, metrics={})
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=token)
    # expect the final status promptly (whether the progress came as its own event first
    # depends on the backend: SQLite wakes on every commit, PostgreSQL on status changes)
    events_seen = []
    while (event := stream.next(timeout=PROMPT_S)) is not None:
        events_seen.append(event)
    assert events_seen and events_seen[-1].kind == "status" and events_seen[-1].data["status"] == "succeeded"
    assert events_seen[-1].data["progress"]["step"] == 1
    assert stream.ended()
    stream.close()


@pytest.mark.parametrize("served", ["postgresql"], indirect=True)  # SQLite has no listening session
def test_given_the_listening_session_killed_expect_it_back_and_no_change_missed(served: Served) -> None:
    # given a watched job, and the API's listening session terminated by the server
    job_id = new_job(served.url)
    stream = Stream(f"{served.url}/v1/jobs/{job_id}/events")
    assert stream.next(timeout=PROMPT_S) is not None
    assert served.wakeups.listening
    before = served.wakeups.connections
    with psycopg.connect(served.db_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'stylefarm-api-listen'").fetchall()
    assert killed == [(True,)]
    # when the job changes right away, while the listener may still be down
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    # expect the change delivered promptly all the same (the lost session wakes every stream),
    # and the listener connected again
    event = stream.next(timeout=PROMPT_S)
    assert event is not None and event.kind == "status" and event.data["status"] == "running"
    deadline = time.monotonic() + PROMPT_S
    while not (served.wakeups.listening and served.wakeups.connections > before):
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)
    store.request_cancel(job_id, "default")
    event = stream.next(timeout=PROMPT_S)
    assert event is not None and event.data["cancel_requested"] is True
    store.mark_canceled(job_id, token=token)
    event = stream.next(timeout=PROMPT_S)
    assert event is not None and event.data["status"] == "canceled"
    assert stream.next(timeout=PROMPT_S) is None and stream.ended()
    stream.close()


def _commit(db: Path) -> None:
    """A write by another connection, as a worker process makes one."""
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")


def test_given_sqlite_and_a_stream_registered_before_any_baseline_when_a_commit_comes_first_expect_woken(
    tmp_path: Path,
) -> None:
    # given a SQLite file, and a stream that registered before the watcher read data_version at all
    db = tmp_path / "w.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")

    async def scenario() -> tuple[bool, bool, bool]:
        wakeups = JobWakeups(f"sqlite:///{db}")
        with wakeups.watch("j1") as woken:
            _commit(db)  # when another connection commits before the watcher's first read
            task = asyncio.create_task(wakeups.run())
            try:
                # expect the stream woken all the same (its read predates the watcher's baseline)
                first = await _woken(woken, 2.0)
                woken.clear()
                # and not again while nothing changes; then woken by the next commit
                idle = await _woken(woken, 0.3)
                _commit(db)
                second = await _woken(woken, 2.0)
                return first, idle, second
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    assert asyncio.run(scenario()) == (True, False, True)


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


SHUTDOWN_SCRIPT = """
import asyncio, contextlib, sqlite3, sys
from api.job_wakeups import JobWakeups

path = sys.argv[1]
sqlite3.connect(path).execute("CREATE TABLE IF NOT EXISTS t (x)").connection.commit()

async def start_and_stop(spins: int) -> None:
    wakeups = JobWakeups(f"sqlite:///{path}")
    task = asyncio.create_task(wakeups.run())
    while wakeups.connections == 0:  # connected (in its thread); its first read is about to start
        await asyncio.sleep(0)
    for _ in range(spins):  # cancel at a different point each time: often while a read runs
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

for i in range(60):
    asyncio.run(start_and_stop(i % 6))
print("ok")
"""


def test_given_sqlite_wakeups_when_cancelled_mid_read_many_times_expect_no_crash(tmp_path: Path) -> None:
    """The API's shutdown cancels the SQLite watcher, often while a ``data_version`` read runs in
    a thread: the connection must not be closed under that read (it crashed the process with a
    segfault). In a child process, so a crash fails this test and not the whole run."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHUTDOWN_SCRIPT, str(tmp_path / "db.sqlite")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
