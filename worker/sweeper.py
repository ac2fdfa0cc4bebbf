"""The sweeper: SQL is the truth, the broker only delivers; every few seconds it repairs
what dead workers and a lost broker left behind.

One pass (``sweep``), every ``Settings.sweep_interval_s`` (5 s):

(a) ``running`` jobs whose lease expired (their worker died, was killed, or has been cut off
    from SQL for longer than ``Settings.lease_ttl_s``) -> requeued and sent again, or failed
    with a problem that says why once they ran ``Settings.max_attempts`` times
    (``store.expire_lease``: conditional on the fencing token the pass read and on the lease
    still being expired, so a worker that renewed meanwhile keeps its job). Whatever the
    method, that is within ``lease_ttl_s + sweep_interval_s`` (35 s) of the worker's last
    renewal, where waiting for a method's hard time limit took up to hours.
(b) ``queued`` jobs unchanged for ``Settings.sweep_queued_after_s`` (10 s) with no message in
    the broker (neither waiting in a queue list nor recently delivered and unacknowledged)
    -> sent again: jobs the API accepted while Redis was down, messages Redis lost, jobs
    requeued while it was away. An unacknowledged message counts only for
    ``UNACKED_FRESH_S`` after its delivery: the message of a worker that died whole stays
    unacknowledged until the visibility timeout (hours) and must not hide its job.
(c) webhook events of final jobs still pending long after they were due (their delivery
    message was lost or never sent) -> their delivery task is sent again
    (``shared.webhooks.dispatch.resend_lost``).
(d) fanned-out parents still ``waiting`` -> settled (``worker.fanout.settle``): one whose
    children all succeeded moves to ``assembling`` and is sent (the worker of its last child
    died before it settled, or settling failed), one with a failed child fails. An
    ``assembling`` parent whose message was lost is sent again by (b), which looks at
    ``assembling`` jobs as at queued ones.

Sending a job twice is harmless: only one claim wins, the other message is dropped; a job
that finished meanwhile (say its ack was lost with the broker) drops every late message.

Who runs it: every Celery worker's main process, in a thread (``SweeperThread``, started by
``worker.celery_app`` when the worker is ready); ``stylefarm up`` as a process; for a separate
deployment ``python -m worker.sweeper --loop``; ``python -m worker.sweeper`` runs one pass now.

One pass per farm per interval, however many sweepers run: a looping sweeper passes only when
it took the tick, ``SET stylefarm:sweeper:tick <who> NX PX <interval>`` in the broker's Redis.
With a thousand workers that is still one pass (one scan of the queue lists) every 5 s, not
two hundred a second. The key expires by itself, so a sweeper that died holding it delays the
next pass by at most one interval. Without Redis there is no tick and no pass: nothing could be
delivered anyway, and the first pass after Redis returns sends everything that waited. Two
passes at once (a manual one) are harmless: every write is a conditional UPDATE.

Cost of a pass: two indexed SELECTs (``ix_jobs_status``, at most ``BATCH`` rows each), one
UPDATE per job it moves and, only when there are queued candidates, one LRANGE of every queue
list and one read of the unacknowledged hash: O(waiting messages), fine up to some 10^5.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from shared.broker.celery_config import QUEUES, RECONCILE_TASK_NAME, queue_list_names
from shared.broker.client import client_app, enqueue_job
from shared.db.orm import Job, utcnow
from shared.db.session import session_scope
from shared.errors import StylefarmError, WorkerLost
from shared.jobs import store
from shared.jobs.status import JobStatus
from shared.settings import Settings, get_settings
from shared.webhooks.dispatch import notify_final, resend_lost
from worker import fanout
from worker.celery_app import app

log = logging.getLogger("stylefarm.sweeper")

BATCH = 500
TICK_KEY = "stylefarm:sweeper:tick"
#: An unacknowledged message older than this no longer proves its queued job will run: longer
#: than the longest retry countdown a worker holds a message for (``worker.tasks.BACKOFF_MAX_S``).
UNACKED_FRESH_S = 600.0
#: Jobs a claim takes: queued ones, and fanned-out parents whose pieces are all done.
WAITING_FOR_A_CLAIM = (JobStatus.QUEUED.value, JobStatus.ASSEMBLING.value)


@dataclass
class Report:
    requeued: list[str] = field(default_factory=list)  # (a) lease expired: queued and sent again
    failed: list[str] = field(default_factory=list)  # (a) lease expired, attempt budget spent
    resent: list[str] = field(default_factory=list)  # (b) queued without a message: sent again
    webhooks_resent: list[str] = field(default_factory=list)  # (c) webhook deliveries sent again
    settled: list[str] = field(default_factory=list)  # (d) waiting parents moved (assembling or failed)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}

    def acted(self) -> bool:
        return any(self.as_dict().values())


def _job_id_of(raw: bytes | str) -> str | None:
    """The job id inside one kombu Redis message (JSON envelope, base64 JSON body)."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries: [message, exchange, routing_key]
            msg = msg[0]
        body = msg.get("body")
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except Exception:
        return None


def job_ids_in_broker(settings: Settings | None = None, unacked_fresh_s: float = UNACKED_FRESH_S) -> set[str]:
    """Job ids of every message waiting in a queue, or delivered and not acknowledged for
    less than ``unacked_fresh_s`` seconds."""
    found: set[str] = set()
    with client_app(settings).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        client = channel.client
        for q in QUEUES:
            for name in queue_list_names(q):
                for raw in client.lrange(name, 0, -1):
                    if (jid := _job_id_of(raw)) is not None:
                        found.add(jid)
        unacked_key = getattr(channel, "unacked_key", "unacked")
        delivered = dict(client.zrange(getattr(channel, "unacked_index_key", "unacked_index"), 0, -1, withscores=True))
        oldest = time.time() - unacked_fresh_s
        for tag, raw in client.hgetall(unacked_key).items():
            if delivered.get(tag, 0.0) >= oldest and (jid := _job_id_of(raw)) is not None:
                found.add(jid)
    return found


def _send(row: Any, settings: Settings, report: Report) -> bool:
    try:
        enqueue_job(row.id, row.queue, row.priority, method=row.method, settings=settings)
        return True
    except StylefarmError as exc:
        report.errors.append(f"{row.id}: not sent: {exc}")
        return False


def _expire_leases(now: datetime, settings: Settings, report: Report) -> None:
    """(a) running jobs whose lease expired."""
    with session_scope() as session:
        rows = list(session.execute(
            select(Job.id, Job.queue, Job.priority, Job.method, Job.fencing_token, Job.lease_expires_at, Job.worker)
            .where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at).limit(BATCH)
        ))
    for row in rows:
        silent = (now - row.lease_expires_at).total_seconds() + settings.lease_ttl_s
        why = WorkerLost(
            f"the worker running this job ({row.worker}) stopped renewing its lease {silent:.0f}s before; "
            "it died, was killed or was cut off"
        ).to_problem(instance=f"/v1/jobs/{row.id}")
        try:
            job = store.expire_lease(row.id, token=row.fencing_token, problem=why, now=now)
        except StylefarmError as exc:
            report.errors.append(f"{row.id}: {exc}")
            continue
        if job is None:
            continue  # renewed, finished or handed back meanwhile
        if job.status == JobStatus.QUEUED.value:
            log.warning("job %s: lease of %s expired (%.0fs silent); requeued", row.id, row.worker, silent)
            report.requeued.append(row.id)
            _send(row, settings, report)
        else:
            log.error("job %s: lease of %s expired after %d attempts, its budget; failed", row.id, row.worker,
                      job.attempts)
            report.failed.append(row.id)
            notify_final(job, settings)


def _resend_lost(now: datetime, queued_after_s: float, settings: Settings, report: Report) -> None:
    """(b) queued jobs that have no message in the broker."""
    with session_scope() as session:
        rows = list(session.execute(
            select(Job.id, Job.queue, Job.priority, Job.method)
            .where(Job.status.in_(WAITING_FOR_A_CLAIM), Job.updated_at < now - timedelta(seconds=queued_after_s))
            .order_by(Job.created_at).limit(BATCH)
        ))
    if not rows:
        return
    try:
        in_broker = job_ids_in_broker(settings)
    except Exception as exc:
        report.errors.append(f"broker unreachable: {exc}")
        return
    for row in rows:
        if row.id not in in_broker and _send(row, settings, report):
            log.warning("job %s was queued with no message in the broker; sent again", row.id)
            report.resent.append(row.id)


def _settle_parents(settings: Settings, report: Report) -> None:
    """(d) waiting parents: settled from their children."""
    for parent_id in store.waiting_parents(BATCH):
        try:
            if fanout.settle(parent_id, settings) is not None:
                report.settled.append(parent_id)
        except StylefarmError as exc:
            report.errors.append(f"{parent_id}: not settled: {exc}")


def sweep(settings: Settings | None = None, *, queued_after_s: float | None = None) -> Report:
    """One pass: (a) expired leases, (d) waiting parents, (b) queued jobs without a message,
    (c) lost webhook deliveries."""
    settings = settings or get_settings()
    report = Report()
    now = utcnow()
    try:
        _expire_leases(now, settings, report)
        _settle_parents(settings, report)
        _resend_lost(now, settings.sweep_queued_after_s if queued_after_s is None else queued_after_s, settings, report)
        report.webhooks_resent = resend_lost(settings)
    except StylefarmError as exc:  # the database is away: the next pass tries again
        report.errors.append(str(exc))
    return report


def who_am_i() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tick_client(settings: Settings) -> Any:
    """A Redis client for ``take_tick`` (its own small pool; one per looping sweeper)."""
    import redis

    return redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=3)


def take_tick(settings: Settings, who: str, client: Any = None) -> bool:
    """True when this sweeper may pass now: no sweeper of the farm passed in the last
    ``sweep_interval_s`` (``SET NX PX`` in the broker's Redis: with a thousand workers trying
    every 5 s, 200 cheap commands a second). False without Redis."""
    import redis

    own = client is None
    client = tick_client(settings) if own else client
    try:
        return bool(client.set(TICK_KEY, who, nx=True, px=max(1, int(settings.sweep_interval_s * 1000 * 0.9))))
    except redis.RedisError:
        return False
    finally:
        if own:
            client.close()


def sweep_if_my_tick(settings: Settings, who: str, client: Any = None) -> Report | None:
    """A pass when this sweeper took the tick; ``None`` when another one has it (or no Redis)."""
    if not take_tick(settings, who, client):
        return None
    report = sweep(settings)
    if report.acted():
        log.info("sweep by %s: %s", who, report.as_dict())
    return report


def sweep_forever(settings: Settings, stop: threading.Event | None = None) -> None:
    """Try for the tick every ``sweep_interval_s`` and pass when it is ours, until ``stop``."""
    stop = stop or threading.Event()
    who = who_am_i()
    client = tick_client(settings)
    log.info("sweeper %s: a pass every %.0fs, one per farm", who, settings.sweep_interval_s)
    try:
        while True:
            try:
                sweep_if_my_tick(settings, who, client)
            except Exception:  # never give up: the next tick tries again
                log.exception("sweep failed")
            if stop.wait(settings.sweep_interval_s):
                return
    finally:
        client.close()


class SweeperThread(threading.Thread):
    """The sweeper in a thread of the Celery worker's main process (daemon: it never holds
    up the worker's exit)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(name="stylefarm-sweeper", daemon=True)
        self.settings = settings or get_settings()
        self._stop = threading.Event()

    def run(self) -> None:
        sweep_forever(self.settings, self._stop)

    def stop(self) -> None:
        self._stop.set()


@app.task(name=RECONCILE_TASK_NAME, ignore_result=True, acks_late=False)
def sweep_task() -> dict[str, list[str]]:
    """One pass, as a task (the wire name of the reconciler it replaced, for messages already queued)."""
    return sweep().as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.sweeper", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--loop", action="store_true", help="sweep every STYLEFARM_SWEEP_INTERVAL_S, one pass per farm per interval"
    )
    parser.add_argument(
        "--queued-after", type=float, default=None,
        help="seconds a queued job may lack a message (default STYLEFARM_SWEEP_QUEUED_AFTER_S)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if args.queued_after is not None:
        settings = settings.model_copy(update={"sweep_queued_after_s": args.queued_after})
    if not args.loop:  # one pass now, whoever else sweeps
        report = sweep(settings)
        print(json.dumps(report.as_dict()), flush=True)
        return 1 if report.errors else 0
    sweep_forever(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
