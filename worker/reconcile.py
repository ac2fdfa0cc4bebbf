"""Reconciler: repair jobs whose message was lost.

* ``queued`` for longer than ``queued_after_s`` and not in the broker (neither waiting in a
  queue list nor delivered-unacknowledged): the broker was down when the job was created,
  or Redis lost data. It is sent again (``enqueue_job``).
* ``running`` with a heartbeat (``updated_at``, bumped by every progress write) older
  than the method's hard time limit plus ``grace_s``: its worker is gone. It is requeued
  and sent again while ``attempts < Settings.max_attempts`` (the one retry budget, shared
  with the worker's retries of transient errors), failed with a problem otherwise.
* A job's webhook event still pending (``shared.webhooks``) long after it was due: its
  delivery message was lost or never sent. It is sent again (``resend_lost``).

Sending a job twice is harmless: ``claim_job`` lets one message through.

Run it periodically: as a Celery beat task (``stylefarm.reconcile``, scheduled by
``worker.celery_app``) or as a command: ``python -m worker.reconcile [--loop 60]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from shared.broker.celery_config import QUEUES, RECONCILE_TASK_NAME, queue_list_names
from shared.broker.client import client_app, enqueue_job
from shared.db.orm import Job, utcnow
from shared.db.session import session_scope
from shared.errors import EngineError, InvalidTransition, StylefarmError
from shared.jobs import store
from shared.jobs.methods import MAX_HARD_LIMIT_S, REGISTRY
from shared.settings import Settings, get_settings
from shared.webhooks.dispatch import resend_lost
from worker.celery_app import app

log = logging.getLogger("stylefarm.reconcile")

QUEUED_AFTER_S = 300
GRACE_S = 600
BATCH = 500


@dataclass
class Report:
    reenqueued: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    webhooks_resent: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


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


def job_ids_in_broker(settings: Settings | None = None) -> set[str]:
    """Job ids of every message waiting in a queue or delivered but not acknowledged."""
    app = client_app(settings)
    found: set[str] = set()
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        client = channel.client
        for q in QUEUES:
            for name in queue_list_names(q):
                for raw in client.lrange(name, 0, -1):
                    if (jid := _job_id_of(raw)) is not None:
                        found.add(jid)
        unacked_key = getattr(channel, "unacked_key", "unacked")
        for raw in client.hvals(unacked_key):
            if (jid := _job_id_of(raw)) is not None:
                found.add(jid)
    return found


def reconcile(*, queued_after_s: float = QUEUED_AFTER_S, grace_s: float = GRACE_S,
              max_attempts: int | None = None, settings: Settings | None = None) -> Report:
    """One pass; ``max_attempts`` defaults to ``Settings.max_attempts``."""
    report = Report()
    if max_attempts is None:
        max_attempts = (settings or get_settings()).max_attempts
    now = utcnow()
    with session_scope() as session:
        queued = list(session.execute(
            select(Job.id, Job.queue, Job.priority, Job.method)
            .where(Job.status == "queued", Job.updated_at < now - timedelta(seconds=queued_after_s))
            .order_by(Job.created_at).limit(BATCH)
        ))
        oldest_limit = min(m.hard_limit_s for m in REGISTRY.values())
        running = list(session.execute(
            select(Job.id, Job.queue, Job.priority, Job.method, Job.attempts, Job.updated_at)
            .where(Job.status == "running", Job.updated_at < now - timedelta(seconds=oldest_limit + grace_s))
            .order_by(Job.updated_at).limit(BATCH)
        ))

    if queued:
        try:
            in_broker = job_ids_in_broker(settings)
        except Exception as exc:
            report.errors.append(f"broker unreachable: {exc}")
            in_broker = None
        if in_broker is not None:
            for waiting in queued:
                if waiting.id in in_broker:
                    continue
                try:
                    enqueue_job(waiting.id, waiting.queue, waiting.priority, method=waiting.method, settings=settings)
                    report.reenqueued.append(waiting.id)
                    log.warning("job %s was queued with no message in the broker; sent again", waiting.id)
                except StylefarmError as exc:
                    report.errors.append(f"{waiting.id}: {exc}")

    for row in running:
        method = REGISTRY.get(row.method)
        hard = method.hard_limit_s if method is not None else MAX_HARD_LIMIT_S
        if row.updated_at > now - timedelta(seconds=hard + grace_s):
            continue  # a long method still within its limit
        silent = (now - row.updated_at).total_seconds()
        try:
            if row.attempts < max_attempts:
                problem = EngineError(
                    f"the worker running this job stopped responding ({silent:.0f}s without a heartbeat); retried",
                    retryable_by_reconciler=True,
                ).to_problem()
                store.requeue_job(row.id, problem)
                enqueue_job(row.id, row.queue, row.priority, method=row.method, settings=settings)
                report.requeued.append(row.id)
                log.warning("job %s: heartbeat stale for %.0fs; requeued", row.id, silent)
            else:
                problem = EngineError(
                    f"the worker running this job stopped responding ({silent:.0f}s without a heartbeat) "
                    f"and the job already ran {row.attempts} times; giving up",
                ).to_problem(instance=f"/v1/jobs/{row.id}")
                store.fail_job(row.id, problem)
                report.failed.append(row.id)
                log.error("job %s: heartbeat stale for %.0fs after %d attempts; failed", row.id, silent, row.attempts)
        except InvalidTransition:
            continue  # it moved on by itself meanwhile
        except StylefarmError as exc:
            report.errors.append(f"{row.id}: {exc}")
    try:  # webhook events whose delivery message was lost (or never sent, as for the jobs failed above)
        report.webhooks_resent = resend_lost(settings)
    except StylefarmError as exc:
        report.errors.append(f"webhooks: {exc}")
    return report


@app.task(name=RECONCILE_TASK_NAME, ignore_result=True, acks_late=False)
def reconcile_task() -> dict:
    """The beat task: one reconcile pass with the default thresholds."""
    return reconcile().as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.reconcile", description=__doc__.splitlines()[0])
    parser.add_argument("--queued-after", type=float, default=QUEUED_AFTER_S, help="seconds a job may wait queued")
    parser.add_argument("--grace", type=float, default=GRACE_S,
                        help="seconds past the hard limit before a running job is stale")
    parser.add_argument("--max-attempts", type=int, default=None,
                        help="runs a job may have before it fails (default: STYLEFARM_MAX_ATTEMPTS)")
    parser.add_argument("--loop", type=float, default=0, help="repeat every N seconds (0 = once)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    get_settings()
    while True:
        report = reconcile(queued_after_s=args.queued_after, grace_s=args.grace, max_attempts=args.max_attempts)
        print(json.dumps(report.as_dict()), flush=True)
        if not args.loop:
            return 1 if report.errors else 0
        time.sleep(args.loop)


if __name__ == "__main__":
    sys.exit(main())
