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

from shared.db.session import is_sqlite, normalize_url

log = logging.getLogger(__name__)

CHANNEL = "stylefarm_jobs"  # the trigger's channel (migration 0008_job_notify)
CONNECT_TIMEOUT_S = 5
SQLITE_CHECK_S = 0.02  # seconds between reads of SQLite's data_version while streams are open
SQLITE_IDLE_S = 5.0  # the same while none is
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0


def libpq_url(url: str) -> str:
    """The libpq connection URL of a SQLAlchemy PostgreSQL URL (no ``+psycopg`` driver part)."""
    return make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


class JobWakeups:
    """One LISTEN session per API process, and the streams' events by job id."""

    def __init__(self, database_url: str) -> None:
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
        """Wake streams until canceled (the lifespan's task)."""
        if self._url is not None:
            await self._listen_postgres(self._url)
        elif self._sqlite_path is not None:
            await self._watch_sqlite(self._sqlite_path)

    async def _listen_postgres(self, url: str) -> None:
        """LISTEN on one session, reconnecting after a lost one."""
        import psycopg

        delay = RECONNECT_MIN_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                    # a silently dead peer ends the session within ~1 min instead of never
                    keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    self.listening, delay = True, RECONNECT_MIN_S
                    self.wake_all()  # changes made while nobody listened: read them now
                    async for notice in conn.notifies():
                        self.wake(notice.payload)
            except (psycopg.Error, OSError) as exc:
                if self.listening:
                    log.warning("job notifications lost (%s); event streams only poll until the listener is back", exc)
            finally:
                if self.listening:
                    self.listening = False
                    self.wake_all()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _watch_sqlite(self, path: str) -> None:
        """Wake streams when another connection committed to the SQLite file.

        A stream must be woken by any commit made after its last read of its row, so each
        stream is compared against a ``data_version`` read *after* it registered: a stream
        registered since the previous read is woken by the next one (and then reads its row
        after that baseline); every stream is woken when the version moved."""
        import sqlite3

        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # autocommit: no held snapshot
        self.connections += 1
        active = self._active = asyncio.Event()
        try:
            version = None
            while True:
                fresh, self._fresh = self._fresh, set()  # registered before this read
                try:
                    now = (await asyncio.to_thread(conn.execute, "PRAGMA data_version")).fetchone()[0]
                except sqlite3.Error as exc:
                    log.warning("cannot read SQLite's data_version (%s); event streams poll", exc)
                    return
                self.listening = True
                if version is not None and now != version:
                    self.wake_all()
                else:
                    for event in fresh:
                        event.set()
                version = now
                if self._watchers:
                    await asyncio.sleep(SQLITE_CHECK_S)
                else:  # idle: wait for the first stream (or read now and then, to stay current)
                    active.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(active.wait(), timeout=SQLITE_IDLE_S)
        finally:
            self.listening, self._active = False, None
            self.wake_all()
            conn.close()
