"""End to end, a fleet that loses nothing: whole workers and pool processes killed, workers
leaving on SIGTERM, a broker outage and a visibility timeout shorter than the job, on a farm
of real Celery prefork workers, a real API and its own real Redis (persistent, like production,
so that it can be stopped and started again on its port without touching the session's farms).

Each test prints and asserts the job's final state, its attempts and how long the recovery
took. Leases here are short (``LEASE_TTL_S``) so that the tests stay around a minute; the
bounds are written in terms of the settings, so they say what the defaults (a 30 s lease, a 5 s
sweep) give in production: a dead worker's job runs again within about 35 s.

SQLite + local storage only: every test stops or kills workers and starts new ones, and each
worker start costs tens of seconds on the 2-core machines the suite runs on; the store's
fencing is the same code on PostgreSQL, where tests/db/test_db_leases.py runs it.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from test_e2e_farm import _zip_of_crops, optimize_spec

from shared.cli.stack import ManagedProcess, redis_process

from harness import REDIS_DATABASES, Farm, RedisServer, child_pids, start_farm

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

LEASE_TTL_S = 10.0
SWEEP_INTERVAL_S = 2.0
GRACE_S = 3.0
FLEET_ENV = {
    "STYLEFARM_LEASE_TTL_S": str(LEASE_TTL_S),
    "STYLEFARM_LEASE_RENEW_S": "2",
    "STYLEFARM_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
    "STYLEFARM_SWEEP_QUEUED_AFTER_S": "3",
    "STYLEFARM_SHUTDOWN_GRACE_S": str(GRACE_S),
}
#: A dead holder's job is claimed again within this: the lease runs out, a sweep finds it
#: (one interval, a second one if the tick was just taken) and a worker claims the new message.
REQUEUE_BOUND_S = LEASE_TTL_S + 2 * SWEEP_INTERVAL_S + 6
FINAL = ("succeeded", "failed", "canceled")


@dataclass
class Fleet:
    farm: Farm
    redis: ManagedProcess
    names: Iterator[int]

    def ensure_workers(self, n: int, env: dict[str, str] | None = None) -> None:
        """Forget dead workers; start new ones (all at once) until ``n`` are alive."""
        for w in [w for w in self.farm.workers if not w.alive()]:
            self.farm.drop_worker(w)
        started = [self.farm.add_worker(f"fleet-w{next(self.names)}", env, wait=False)
                   for _ in range(n - len(self.farm.workers))]
        for w in started:
            w.wait_ready()

    def row(self, job_id: str) -> dict[str, Any]:
        return self.farm.db_rows([job_id])[job_id]

    def wait_row(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Poll the job's row in SQL (fencing token, lease, worker) until ``until(row)``."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(job_id)
            if until(row):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: {row}\n{self.farm.logs()}")
            time.sleep(0.2)

    def claims(self, job_id: str) -> list[tuple[str, int]]:
        """(worker, fencing token) of every claim of the job from every worker's log, by token."""
        pattern = rf"job {job_id}: claimed by (\S+) \(task \S+, attempt \d+, token (\d+),"
        found = re.findall(pattern, self.farm.log_text())
        return sorted(((worker, int(token)) for worker, token in found), key=lambda claim: claim[1])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    proc, url = redis_process(base / "redis", log_dir=base / "logs", appendonly=True, databases=REDIS_DATABASES)
    proc.start().wait_ready()
    try:
        farm = start_farm("sqlite-local", home=base / "farm", redis=RedisServer(proc, url), workers=2,
                          extra_env=FLEET_ENV)
    except BaseException:
        proc.stop()
        raise
    try:
        yield Fleet(farm, proc, itertools.count(1))
    finally:
        farm.close()
        proc.stop()


def report(test: str, row: dict[str, Any], seconds: float, **measured: float) -> None:
    extra = "".join(f", {k} {v:.1f}s" for k, v in measured.items())
    print(f"\n[fleet] {test}: {row['status']}, attempts {row['attempts']}, token {row['fencing_token']}, "
          f"worker {row['worker']}, {seconds:.1f}s in all{extra}")


def render_spec(fleet: Fleet, content_png: bytes, style_png: bytes, steps: int = 250) -> dict[str, Any]:
    """An optimize job of some 15 s here: long enough to be cut in the middle."""
    return optimize_spec(fleet.farm.upload(content_png), fleet.farm.upload(style_png), steps=steps)


def claimed_again(token: int) -> Callable[[dict[str, Any]], bool]:
    """The job left the old claim: queued again, running under a newer token, or final."""
    return lambda r: r["status"] == "queued" or r["fencing_token"] > token or r["status"] in FINAL


@dataclass
class Held:
    """A job running on one worker of the fleet: the claim a fault is about to cut."""

    job_id: str
    token: int
    worker: ManagedProcess
    submitted: float  # monotonic

    def pool_pids(self) -> list[int]:
        assert self.worker.pid is not None
        return child_pids(self.worker.pid)


def submit_and_hold(fleet: Fleet, spec: dict[str, Any], step: int = 3) -> Held:
    """With two workers up, submit ``spec`` and wait until it runs at ``step``."""
    fleet.ensure_workers(2)
    submitted = time.monotonic()
    job_id = fleet.farm.create(spec)["id"]
    fleet.farm.wait(job_id, until=lambda j: j["status"] == "running" and j["progress"]["step"] >= step, timeout=180)
    return Held(job_id, fleet.row(job_id)["fencing_token"], fleet.farm.holder(job_id), submitted)


def cut(fleet: Fleet, held: Held, fault: Callable[[], None], timeout: float) -> tuple[float, dict[str, Any]]:
    """Inject ``fault``; seconds until the job left ``held``'s claim, and its row then."""
    at = time.monotonic()
    fault()
    again = fleet.wait_row(held.job_id, claimed_again(held.token), timeout=timeout)
    return time.monotonic() - at, again


def sigterm(fleet: Fleet, held: Held) -> tuple[float, float, dict[str, Any]]:
    """SIGTERM to the holder's main process only (as Kubernetes and ``docker stop`` send it);
    seconds until the job left its claim and until the worker exited, and the row then."""
    asked = time.monotonic()
    handed_back_s, again = cut(fleet, held, lambda: held.worker.signal(signal.SIGTERM), timeout=30)
    assert held.worker.proc is not None
    held.worker.proc.wait(timeout=60)
    fleet.farm.drop_worker(held.worker)
    return handed_back_s, time.monotonic() - asked, again


def finish(fleet: Fleet, held: Held, test: str, **measured: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for the end; print and return the job (API view) and its row."""
    done = fleet.farm.wait(held.job_id, timeout=300)
    row = fleet.row(held.job_id)
    report(test, row, time.monotonic() - held.submitted, **measured)
    return done, row


def test_whole_worker_killed_mid_job_is_requeued_by_the_sweeper_and_succeeds_elsewhere(
    fleet: Fleet, content_png: bytes, style_png: bytes
) -> None:
    """Given two workers, when the one running a job dies whole (main process and pool,
    SIGKILL to the process group: a crashed machine, an evicted pod), then its lease runs
    out, a sweeper requeues the job and the other worker finishes it: attempts == 2."""
    held = submit_and_hold(fleet, render_spec(fleet, content_png, style_png))

    def crash() -> None:
        held.worker.kill()
        fleet.farm.drop_worker(held.worker)

    requeued_s, again = cut(fleet, held, crash, timeout=REQUEUE_BOUND_S + 30)
    done, row = finish(fleet, held, "whole worker killed", requeued_after=requeued_s)

    assert again["status"] != "running" or again["fencing_token"] == held.token + 1
    assert requeued_s <= REQUEUE_BOUND_S, f"requeued {requeued_s:.1f}s after the kill"
    assert done["status"] == "succeeded", done["error"]
    assert row["attempts"] == 2 and row["fencing_token"] == 2
    assert [(w.split("@")[0], token) for w, token in fleet.claims(held.job_id)] == [
        (held.worker.name, 1), (row["worker"].split("@")[0], 2)
    ]


def test_pool_child_killed_is_requeued_within_a_lease_and_succeeds(
    fleet: Fleet, content_png: bytes, style_png: bytes
) -> None:
    """Given a job running in a pool process, when that process is SIGKILLed (the OOM
    killer), then the job does not stay ``running`` at the dead step: the worker's main
    process saw its pool process die and requeued the job before the dead claim's lease ran
    out (it did not wait for it), and the job succeeds."""
    held = submit_and_hold(fleet, render_spec(fleet, content_png, style_png))
    pool = held.pool_pids()
    assert pool, "the worker has no pool process"

    def oom_kill() -> None:
        for pid in pool:
            os.kill(pid, signal.SIGKILL)

    lease_until = fleet.row(held.job_id)["lease_expires_at"]
    lease_left_s = (lease_until.replace(tzinfo=lease_until.tzinfo or UTC) - datetime.now(UTC)).total_seconds()
    requeued_s, _ = cut(fleet, held, oom_kill, timeout=REQUEUE_BOUND_S + 30)
    done, row = finish(fleet, held, "pool process killed", requeued_after=requeued_s, lease_left=lease_left_s)

    assert requeued_s < lease_left_s, f"requeued {requeued_s:.1f}s after the kill, the lease had {lease_left_s:.1f}s"
    assert done["status"] == "succeeded", done["error"]
    assert row["attempts"] == 2 and row["fencing_token"] == 2
    assert held.worker.alive(), "the worker's main process survives and forks a new pool process"


def test_sigterm_during_a_long_render_hands_it_back_at_once(fleet: Fleet, content_png: bytes, style_png: bytes) -> None:
    """Given a render that would not end within the grace period, when its worker gets
    SIGTERM (scale-down), then the worker requeues it with its lease released and exits at
    once, and another worker claims it right away (no lease to wait for) and finishes it."""
    held = submit_and_hold(fleet, render_spec(fleet, content_png, style_png))
    handed_back_s, exited_s, again = sigterm(fleet, held)
    done, row = finish(fleet, held, "SIGTERM during a render", handed_back_after=handed_back_s, exited_after=exited_s)

    assert handed_back_s < GRACE_S + 5 and exited_s < GRACE_S + 15, (handed_back_s, exited_s)
    assert again["lease_expires_at"] is None or again["fencing_token"] > held.token
    assert done["status"] == "succeeded", done["error"]
    assert row["attempts"] == 2 and not row["worker"].startswith(held.worker.name + "@")
    assert f"job {held.job_id}: handed back" in fleet.farm.log_text()


def test_sigterm_during_training_checkpoints_hands_back_and_resumes(fleet: Fleet, style_png: bytes) -> None:
    """Given a training job that checkpoints only every 150 steps, when its worker gets SIGTERM
    at step 12 or later, then the run checkpoints the step it stopped at, uploads it, hands the
    job back, and the next worker resumes from that step: no step is trained twice. (200 steps:
    at 32 px a fast CPU trains 60 steps within the 3 s grace and would just finish the job.)"""
    farm = fleet.farm
    dataset = farm.upload(_zip_of_crops("astronaut", 6), "d.zip")
    spec = {"method": "train-fast", "name": "fleet-leave", "dataset": dataset, "styles": [farm.upload(style_png)],
            "steps": 200, "batch_size": 2, "image_size": 32, "style_size": 32, "checkpoint_every": 150}
    held = submit_and_hold(fleet, spec, step=12)  # no periodic checkpoint yet (the first is at 150)
    handed_back_s, _, handed_back = sigterm(fleet, held)
    done, row = finish(fleet, held, "SIGTERM during training", handed_back_after=handed_back_s)
    resumed_from = (done.get("result") or {}).get("metrics", {}).get("resumed_from")
    print(f"[fleet] resumed from step {resumed_from} (SIGTERM at step >= 12, last progress {handed_back['step']})")

    assert handed_back_s < GRACE_S + 10, handed_back_s
    assert done["status"] == "succeeded", done["error"]
    assert row["attempts"] == 2 and done["model_id"]
    assert resumed_from is not None and resumed_from >= max(12, handed_back["step"]), resumed_from


def test_jobs_accepted_during_a_broker_outage_run_within_seconds_of_its_return(
    fleet: Fleet, content_png: bytes
) -> None:
    """Given a job running and Redis then stopped, when a job is submitted during the outage
    (the API answers 202: SQL is the truth) and Redis starts again on its port, then the
    sweeper sends the new job within seconds and it runs; the job that finished during the
    outage (its acknowledgement lost) is not run again."""
    farm = fleet.farm
    content = farm.upload(content_png)
    spec = {"method": "fast", "content": content, "size": 64, "style": 3}
    during = submit_and_hold(fleet, optimize_spec(content, content, steps=120), step=2).job_id

    fleet.redis.stop()
    t0 = time.monotonic()
    accepted = farm.submit(spec)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    farm.wait(during, timeout=120)  # it finishes while the broker is away
    time.sleep(max(0.0, 5 - (time.monotonic() - t0)))
    fleet.redis.start().wait_ready()
    back = time.monotonic()
    done = farm.wait(job_id, timeout=120)
    ran_s = time.monotonic() - back
    row = fleet.row(job_id)
    report("broker outage", row, time.monotonic() - t0, ran_after_return=ran_s)

    assert done["status"] == "succeeded", done["error"]
    # the sweeper passes every 2 s; the workers' consumers reconnect with Celery's back-off (2, 4, 6 s...)
    assert row["attempts"] == 1 and ran_s < 30, ran_s
    time.sleep(2 * SWEEP_INTERVAL_S)
    finished = fleet.row(during)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1 and len(fleet.claims(during)) == 1


def test_visibility_timeout_shorter_than_the_job_never_runs_it_twice_at_once(
    fleet: Fleet, content_png: bytes, style_png: bytes
) -> None:
    """Given workers whose Redis visibility timeout (5 s) is shorter than the job, when the
    unacknowledged message is delivered again to the idle worker, then that worker finds the
    job running under a live lease and drops it: one claim, one token, a consistent row."""
    for w in list(fleet.farm.workers):  # these workers had the default timeout
        w.stop()
        fleet.farm.drop_worker(w)
    fleet.ensure_workers(2, env={"STYLEFARM_VISIBILITY_TIMEOUT_S": "5"})
    farm = fleet.farm
    t0 = time.monotonic()
    job_id = submit_and_hold(fleet, render_spec(fleet, content_png, style_png, steps=800)).job_id
    running_since = time.monotonic()
    done = farm.wait(job_id, timeout=300)
    ran_s = time.monotonic() - running_since
    row = fleet.row(job_id)
    dropped = farm.log_text().count(f"job {job_id}: not claimable")
    report("visibility timeout 5 s", row, time.monotonic() - t0, ran=ran_s)
    print(f"[fleet] claims {fleet.claims(job_id)}; redelivered messages dropped: {dropped}")

    assert ran_s > 8, "the job must outlast the visibility timeout for this test to mean anything"
    assert dropped >= 1, "the message was never delivered again"
    assert fleet.claims(job_id) == [(row["worker"], 1)]
    assert done["status"] == "succeeded", done["error"]
    assert (row["attempts"], row["fencing_token"], row["stage"]) == (1, 1, "done") and row["step"] == row["total"] > 0
