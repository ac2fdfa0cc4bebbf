"""Wake-ups for the job event streams: the database tells the API when a job's status changed.

On PostgreSQL a trigger (migration ``0008_job_notify``) sends ``NOTIFY stylefarm_jobs,
'<job id>'`` when a job's status or cancel flag changes; the server delivers it when the
writing transaction commits, to every session that ran ``LISTEN stylefarm_jobs``. Each API
process keeps one such session (``JobWakeups.run``, an asyncio task of the app's lifespan) and
sets the ``asyncio.Event`` of every stream watching that job, so a status change reaches the
client as soon as it is committed instead of at the stream's next poll (``POLL_S`` of
``api.routes.events``, which still paces progress events).

SQLite (the embedded single-machine default) has no notifications. There one connection reads
``PRAGMA data_version`` every ``SQLITE_CHECK_S`` while streams are open: the value changes
when another connection (a worker) committed anything, and then every stream is woken to read
its row. That is one tiny query per interval for the whole process instead of one per stream.

The wake-ups only say *when* to read: the stream still reads the row itself, and still polls,
so a lost notification costs at most one poll interval. When the listening session is lost
(the database restarted, a network cut), every stream is woken once and the listener
reconnects with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy.engine import make_url

from shared.db.session import is_sqlite, libpq_url

log = logging.getLogger(__name__)

CHANNEL = "stylefarm_jobs"  # the trigger's channel (migration 0008_job_notify)
CONNECT_TIMEOUT_S = 5
SQLITE_CHECK_S = 0.02  # seconds between reads of SQLite's data_version while streams are open
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0
APPLICATION_NAME = "stylefarm-api-listen"  # how the session shows in pg_stat_activity
PROBE_TIMEOUT_S = 5.0  # how long a new LISTEN session may take to receive its own NOTIFY


class JobWakeups:
    """One LISTEN session per API process, and the streams' events by job id."""

    def __init__(self, database_url: str) -> None:
        """``database_url``: the URL the LISTEN session uses (``Settings.resolved_listen_url``)."""
        self._url: str | None = None  # PostgreSQL: LISTEN
        self._sqlite_path: str | None = None  # SQLite: data_version
        if not is_sqlite(database_url):
            self._url = libpq_url(database_url)
        elif (database := make_url(database_url).database) and database != ":memory:":
            self._sqlite_path = database
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._fresh: set[asyncio.Event] = set()  # SQLite: registered since the last data_version read
        self._active: asyncio.Event | None = None  # SQLite: set when a stream registers (made in the loop)
        #: True while wake-ups come (the LISTEN session is up, or SQLite's version is read).
        self.listening = False
        #: Connections made so far (the tests watch it reconnect).
        self.connections = 0

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event that is set whenever ``job_id``'s row may have changed; the caller clears
        it before each read of the row, so a change committed after the read sets it again."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        self._fresh.add(event)
        if self._active is not None:
            self._active.set()
        try:
            yield event
        finally:
            self._fresh.discard(event)
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[job_id]

    def wake(self, job_id: str) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()

    def wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    async def run(self) -> None:
        """Wake streams until canceled (the lifespan's task). Never raises: whatever goes wrong,
        the streams poll, and the wake-ups come back when the database does."""
        if self._url is None and self._sqlite_path is None:
            return  # an in-memory SQLite database: nothing to watch
        delay = RECONNECT_MIN_S
        while True:
            try:
                if self._url is not None:
                    if not await self._listen_postgres(self._url):
                        return  # the session gets no notifications: polling it is (logged)
                elif self._sqlite_path is not None:
                    await self._watch_sqlite(self._sqlite_path)
                delay = RECONNECT_MIN_S  # it ran (and ended): start again soon
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database error, or a bug: log, poll, retry
                if self.listening or delay == RECONNECT_MIN_S:  # once per outage, not per retry
                    log.warning("job wake-ups unavailable (%s: %s); event streams poll until they are back",
                                type(exc).__name__, exc)
                else:
                    log.debug("job wake-ups: retrying after %s", exc)
            finally:
                if self.listening:
                    self.listening = False
                    self.wake_all()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _listen_postgres(self, url: str) -> bool:
        """LISTEN on one session until it is lost (raises). False when the session receives no
        notification at all, not even its own (a transaction-mode pooler such as PgBouncer
        between the API and PostgreSQL: set ``STYLEFARM_DATABASE_LISTEN_URL``)."""
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME,
            # a silently dead peer ends the session within ~1 min instead of never
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            await conn.execute(f"NOTIFY {CHANNEL}, ''")  # to itself: proves this session receives them
            probe = [n async for n in conn.notifies(timeout=PROBE_TIMEOUT_S, stop_after=1)]
            if not probe:
                log.warning("the database session of LISTEN %s received no notification within %.0f s (a "
                            "transaction-mode pooler in front of PostgreSQL?); event streams poll. Point "
                            "STYLEFARM_DATABASE_LISTEN_URL at PostgreSQL directly or at a session-mode pool.",
                            CHANNEL, PROBE_TIMEOUT_S)
                return False
            self.connections += 1
            self.listening = True
            self.wake_all()  # changes made while nobody listened: read them now
            async with contextlib.aclosing(conn.notifies()) as notices:  # closed: releases the connection's lock
                async for notice in notices:
                    self.wake(notice.payload)
        return True

    async def _watch_sqlite(self, path: str) -> None:
        """Wake streams when another connection committed to the SQLite file (until an error).

        A stream must be woken by any commit made after its last read of its row, so each
        stream is compared against a ``data_version`` read *after* it registered: a stream
        registered since the previous read is woken by the next one (and then reads its row
        after that baseline); every stream is woken when the version moved."""
        import sqlite3
        from concurrent.futures import ThreadPoolExecutor

        active = self._active = asyncio.Event()
        # One thread owns the connection: its connect, every read and the close run on it in
        # order. A cancelled await (the app shutting down) leaves its call running in the
        # thread; a close from the loop meanwhile would free the connection under it (a segfault).
        owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-wakeups")
        loop = asyncio.get_running_loop()
        opened: list[sqlite3.Connection] = []

        def connect() -> None:
            opened.append(sqlite3.connect(path, isolation_level=None))  # autocommit: no held snapshot

        def data_version() -> int:
            return int(opened[0].execute("PRAGMA data_version").fetchone()[0])

        def close() -> None:
            for conn in opened:
                conn.close()

        try:
            await loop.run_in_executor(owner, connect)
            self.connections += 1
            version = None
            while True:
                fresh, self._fresh = self._fresh, set()  # registered before this read
                now = await loop.run_in_executor(owner, data_version)
                self.listening = True
                if version is not None and now != version:
                    self.wake_all()
                else:
                    for event in fresh:
                        event.set()
                version = now
                if self._watchers:
                    await asyncio.sleep(SQLITE_CHECK_S)
                else:  # idle until a stream registers (it is fresh: the next read wakes it)
                    active.clear()
                    await active.wait()
        finally:
            self._active = None
            self._fresh.update(e for watchers in self._watchers.values() for e in watchers)  # next baseline
            owner.submit(close)  # after any connect or read still running
            owner.shutdown(wait=False)
