"""Load at the capacity model's per-worker rates (docs/deploy.md), with SIMULATED workers.

Starts PostgreSQL, Redis, the moto S3 server and the real API (no Celery workers), then runs

* ``--workers`` simulated workers (processes): each takes a message off the real Redis queue
  list (BRPOP, as kombu does), claims the job with ``shared.jobs.store.claim_job``, reports
  progress every ``--progress-s`` (``record_progress``), renews its lease every ``--renew-s``
  where the code has leases (``renew_lease``), and finishes with ``succeed_job`` after
  ``--job-s`` seconds. No rendering, no storage traffic.
* ``--clients`` polling clients (processes): they submit jobs through the API
  (``POST /v1/jobs``, which writes the row and sends the message) at the rate that keeps the
  workers busy, and poll each open job (``GET /v1/jobs/{id}``) every ``--poll-s``.

It reports, per operation, the count, ops/s reached and latency (median, p99), plus the CPU
seconds PostgreSQL, Redis and the API spent per second of the run and per SQL write. Only
127.0.0.1 traffic.

    python bench/load.py [--workers 16] [--clients 2] [--job-s 10] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from soak import cpu_line  # noqa: E402

from shared.imaging import png_bytes  # noqa: E402

from harness import PostgresServer, RedisServer, S3Server, child_pids, start_farm  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
#: SQL writes per operation of the store (the statements each function sends).
SQL_WRITES = {"claim": 1, "progress": 1, "renew": 1, "succeed": 1, "submit": 1}
#: Operations that reach PostgreSQL (writes, and the API's reads for polls).
SQL_OPS = (*SQL_WRITES, "poll")
#: Operations that reach the API.
API_OPS = ("submit", "poll")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every process below it, alive now."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, ValueError, IndexError):
            continue
        todo.extend(child_pids(p))
    return total


def _job_id_of(raw: bytes) -> str | None:
    try:
        from worker.sweeper import _job_id_of as parse  # with leases
    except ImportError:
        from worker.reconcile import _job_id_of as parse
    return parse(raw)


def sim_worker(index: int, args: argparse.Namespace, env: dict[str, str], stop_at: float, out: Any) -> None:
    """One simulated worker: BRPOP, claim, progress/renew, succeed; until ``stop_at``."""
    os.environ.update(env)
    import redis

    from shared.broker.celery_config import queue_list_names
    from shared.jobs import store
    from shared.jobs.outcomes import RenderKeys, RenderOutcome
    from shared.settings import get_settings

    leased = "token" in inspect.signature(store.succeed_job).parameters
    renew = getattr(store, "renew_lease", None)
    r = redis.Redis.from_url(get_settings().broker_url)
    lists = queue_list_names("gpu")
    lat: dict[str, list[float]] = collections.defaultdict(list)
    name = f"sim-{index}"

    def timed(op: str, fn, *a, **kw):
        t = time.perf_counter()
        res = fn(*a, **kw)
        lat[op].append((time.perf_counter() - t) * 1000)
        return res

    while time.time() < stop_at:
        got = timed("broker_pop", r.brpop, lists, timeout=1)
        if not got:
            continue
        job_id = _job_id_of(got[1])
        if not job_id:
            continue
        task_id = uuid.uuid4().hex
        job = timed("claim", store.claim_job, job_id, task_id=task_id, worker=name)
        if job is None:
            continue
        hold = {"token": job.fencing_token} if leased else {}
        fin = hold if leased else {"task_id": task_id}
        started = time.monotonic()
        next_renew = started + args.renew_s
        steps = max(1, int(args.job_s / args.progress_s))
        for step in range(1, steps + 1):
            time.sleep(max(0.0, started + step * args.progress_s - time.monotonic()))
            timed("progress", store.record_progress, job_id, step=step, total=steps, loss=1.0 / step,
                  stage="simulated", **hold)
            if renew is not None and time.monotonic() >= next_renew:
                timed("renew", renew, job_id, job.fencing_token)
                next_renew += args.renew_s
        outcome = RenderOutcome(keys=RenderKeys(image=f"tenants/default/jobs/{job_id}/result.png"), width=64,
                                height=64, size_bytes=1000, seconds=time.monotonic() - started, worker=name)
        timed("succeed", store.succeed_job, job_id, outcome.model_dump(mode="json"), None, **fin)
    out.put(dict(lat))


def sim_client(index: int, args: argparse.Namespace, api_url: str, content: str, rate: float, stop_at: float,
               out: Any) -> None:
    """Submit jobs at ``rate``/s and poll each open one every ``poll_s``; until ``stop_at``."""
    lat: dict[str, list[float]] = collections.defaultdict(list)
    open_jobs: dict[str, float] = {}  # id -> next poll
    spec = {"method": "fast", "content": content, "size": 64, "style": 1}
    next_submit = time.monotonic() + index / max(rate, 1e-9) / max(1, args.clients)
    with httpx.Client(base_url=api_url, timeout=30) as client:
        while time.time() < stop_at:
            now = time.monotonic()
            if now >= next_submit:
                t = time.perf_counter()
                resp = client.post("/v1/jobs", json=spec)
                lat["submit"].append((time.perf_counter() - t) * 1000)
                if resp.status_code == 202:
                    open_jobs[resp.json()["id"]] = now + args.poll_s
                next_submit += 1.0 / rate
            for job_id, due in list(open_jobs.items()):
                if due <= time.monotonic():
                    t = time.perf_counter()
                    resp = client.get(f"/v1/jobs/{job_id}")
                    lat["poll"].append((time.perf_counter() - t) * 1000)
                    if resp.status_code != 200 or resp.json()["status"] in ("succeeded", "failed", "canceled"):
                        del open_jobs[job_id]
                    else:
                        open_jobs[job_id] = due + args.poll_s
            time.sleep(max(0.0, min([next_submit, *open_jobs.values()]) - time.monotonic()))
    out.put(dict(lat))


def summarize(lat: dict[str, list[float]], seconds: float) -> dict[str, dict[str, float]]:
    return {op: {"count": len(v), "per_s": round(len(v) / seconds, 1),
                 "median_ms": round(statistics.median(v), 2), "p99_ms": round(float(np.percentile(v, 99)), 2)}
            for op, v in sorted(lat.items()) if v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16, help="simulated workers")
    parser.add_argument("--clients", type=int, default=2, help="polling client processes")
    parser.add_argument("--job-s", type=float, default=10.0, help="seconds a simulated job runs")
    parser.add_argument("--progress-s", type=float, default=0.5, help="seconds between progress writes "
                        "(Settings.progress_interval_s)")
    parser.add_argument("--renew-s", type=float, default=5.0, help="seconds between lease renewals")
    parser.add_argument("--poll-s", type=float, default=2.0, help="seconds between polls of one open job")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)

    base = Path(tempfile.mkdtemp(prefix="stylefarm-load-"))
    redis = pg = s3 = farm = None
    try:
        redis, pg, s3 = RedisServer.start(base), PostgresServer.start(), S3Server.start(base)
        farm = start_farm("postgres-s3", home=base / "farm", redis=redis, postgres=pg, s3=s3, workers=0)
        content = farm.upload(png_bytes(np.zeros((64, 64, 3), np.uint8)), "content.png")  # (H, W, 3)
        api = next(p for p in farm.stack.processes if p.name == "api")
        rate = args.workers / args.job_s  # jobs/s that keep every simulated worker busy
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        warm = 3.0
        stop_at = time.time() + warm + args.duration
        procs = [ctx.Process(target=sim_worker, args=(i, args, farm.env, stop_at, out)) for i in range(args.workers)]
        procs += [ctx.Process(target=sim_client, args=(i, args, farm.api_url, content, rate / args.clients, stop_at,
                                                        out)) for i in range(args.clients)]
        for proc in procs:
            proc.start()
        time.sleep(warm)
        cpu0 = {"postgres": tree_cpu_s(pg.process.pid), "redis": tree_cpu_s(redis.process.pid),
                "api": tree_cpu_s(api.pid)}
        t0 = time.monotonic()
        time.sleep(max(0.0, stop_at - time.time() - 0.5))
        cpu1 = {"postgres": tree_cpu_s(pg.process.pid), "redis": tree_cpu_s(redis.process.pid),
                "api": tree_cpu_s(api.pid)}
        measured = time.monotonic() - t0
        lat: dict[str, list[float]] = collections.defaultdict(list)
        for _ in procs:
            for op, values in out.get(timeout=120).items():
                lat[op].extend(values)
        for proc in procs:
            proc.join(30)
        seconds = warm + args.duration  # the ops lists cover the warm-up too
        ops = summarize(lat, seconds)
        sql_writes_s = sum(ops.get(op, {}).get("per_s", 0) * n for op, n in SQL_WRITES.items())
        sql_ops_s = sum(ops.get(op, {}).get("per_s", 0) for op in SQL_OPS)
        api_ops_s = sum(ops.get(op, {}).get("per_s", 0) for op in API_OPS)
        cpu = {k: round((cpu1[k] - cpu0[k]) / measured, 3) for k in cpu0}
        report = {
            "machine": cpu_line(),
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "ops": ops,
            "sql_writes_per_s": round(sql_writes_s, 1),
            "cpu_cores_used": cpu,
            "sql_ops_per_s": round(sql_ops_s, 1),
            "postgres_cpu_ms_per_sql_op": round(1000 * cpu["postgres"] / sql_ops_s, 3) if sql_ops_s else None,
            "api_cpu_ms_per_request": round(1000 * cpu["api"] / api_ops_s, 3) if api_ops_s else None,
        }
    finally:
        if farm is not None:
            farm.close()
        for server in (s3, redis, pg):
            if server is not None:
                server.stop()
        shutil.rmtree(base, ignore_errors=True)

    print(f"{args.workers} simulated workers, {args.clients} clients, job {args.job_s}s, progress every "
          f"{args.progress_s}s, renew every {args.renew_s}s, poll every {args.poll_s}s, {args.duration:.0f}s")
    print("| op | count | ops/s | median ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for op, s in report["ops"].items():
        print(f"| {op} | {s['count']} | {s['per_s']} | {s['median_ms']} | {s['p99_ms']} |")
    print(f"SQL writes/s {report['sql_writes_per_s']}, SQL ops/s (with poll reads) {report['sql_ops_per_s']}; "
          f"CPU cores used: {report['cpu_cores_used']}; PostgreSQL CPU per SQL op "
          f"{report['postgres_cpu_ms_per_sql_op']} ms; API CPU per request {report['api_cpu_ms_per_request']} ms")
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
