"""Chaos soak: push small jobs through a real farm while faults are injected, then account
for every job, Jepsen-style.

The farm is real (``tests/harness.py``): PostgreSQL, the moto S3 server, Redis (append-only
file on, as a deployment runs it), the API, THREE Celery worker processes and the farm's
sweeper (``worker.sweeper --loop`` when the code has one, else ``worker.reconcile --loop``).
While jobs are submitted at ``--rate`` per second, faults land at random times:

* ``kill_worker``  SIGKILL a whole worker (its process group: main process and pool), restart it
* ``kill_child``   SIGKILL one pool child (Celery forks a new one)
* ``term_worker``  SIGTERM a worker (graceful leave), wait for it to exit, restart it
* ``redis_restart`` stop Redis, leave it down a few seconds, start it again (twice)
* ``s3_pause``     SIGSTOP the S3 server for a while, then SIGCONT (once)

Then every job is accounted for, from the API's answers, the SQL rows, the stored objects
and the workers' JSON logs (the fencing log):

* submitted / acknowledged (202) / succeeded / failed (with reasons) / canceled
* lost: acknowledged, but no row in SQL
* stuck: a row, not final after the drain period
* run twice concurrently: a claim of one holder (worker process, task) while another
  holder's claim of the same job was still live (it had not ended, died or moved on)
* duplicated results: more than one result object under the job's prefix (preview.png
  excluded)
* recovery per fault: seconds from the fault to the first job success after it, and to
  the final state of the jobs the killed holders had

Goals: 0 lost, 0 run twice concurrently, 0 duplicated results, 0 stuck, every fault
recovered (first success) within 60 s. The exit status is 1 when a goal is missed.

    python bench/soak.py [--jobs 500] [--seed 1] [--drain-s 300] [--rate 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from shared.cli.stack import ManagedProcess, redis_process  # noqa: E402
from shared.imaging import png_bytes  # noqa: E402

from harness import (  # noqa: E402
    Farm,
    PostgresServer,
    RedisServer,
    S3Server,
    child_pids,
    start_farm,
)

FINAL = ("succeeded", "failed", "canceled")
RECOVERY_GOAL_S = 60.0
#: Every fault is injected before this fraction of the jobs is submitted (submissions wait), so
#: jobs keep arriving after the last fault and its recovery can be measured.
LAST_FAULT_AT = 0.8
FAULT_KINDS = ("kill_worker", "kill_child", "term_worker", "redis_restart", "s3_pause")
#: Fault counts for a full soak (``--jobs 500``); scaled down with the number of jobs.
FULL_PLAN = {"kill_worker": 4, "kill_child": 4, "term_worker": 3, "redis_restart": 2, "s3_pause": 1}
#: What a holder logs when it lets go of a job (success, failure, requeue, refusal, leave).
END_RE = re.compile(r"succeeded in|failed|canceled after|requeue|giving up|refused|fenc|lease|hand|released|"
                    r"not claimable|dropping", re.I)
CLAIM_RE = re.compile(r"claimed by (\S+) \(task ([\w-]+)")
TOKEN_RE = re.compile(r"\btoken (\d+)")  # the fencing token, where the code has leases


@dataclass
class Fault:
    kind: str
    at: float  # epoch seconds the fault was injected
    target: str = ""
    ended: float = 0.0  # when the fault was over (process restarted, server back)
    pids: list[int] = field(default_factory=list)  # processes it killed
    note: str = ""


@dataclass
class Submission:
    key: str
    method: str
    at: float
    status: int | None = None
    job_id: str | None = None
    error: str = ""


@dataclass
class Holder:
    job_id: str
    worker: str
    pid: int
    task_id: str
    claimed: float
    ended: float | None = None
    how: str = ""
    token: int | None = None


def cpu_line() -> str:
    """The machine line every benchmark prints: CPU model, cores, the SIMD flags torch cares about."""
    model, flags = "?", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"CPU {model}, {os.cpu_count()} cores, flags: {' '.join(wanted) or 'none of interest'}, " \
           f"load {os.getloadavg()[0]:.1f}"


def plan_faults(jobs: int, rng: random.Random, one_each: bool) -> list[tuple[int, str]]:
    """(submitted-job index at which it fires, kind): one of each kind, or FULL_PLAN scaled to
    ``jobs``. Faults are tied to the load, not the clock, so jobs keep arriving after each one
    (a fault that stalls submissions, e.g. a paused S3, does not push the next ones past the end)."""
    if one_each:
        kinds = list(FAULT_KINDS)
    else:
        scale = min(1.0, jobs / 500)
        kinds = [k for k, n in FULL_PLAN.items() for _ in range(max(1, round(n * scale)))]
        if kinds.count("redis_restart") < 2:
            kinds.append("redis_restart")  # Redis restarts twice whatever the size
    rng.shuffle(kinds)
    # evenly spaced from 10 % to 75 % of the jobs, with jitter
    slots = np.linspace(0.1, 0.75, len(kinds))
    jitter = 0.3 * (0.65 / max(1, len(kinds)))
    return [(int(jobs * float(s + rng.uniform(-jitter, jitter))), k) for s, k in zip(slots, kinds, strict=True)]


class Soak:
    def __init__(self, *, jobs: int, seed: int, drain_s: float, rate: float, one_each: bool = False,
                 optimize_share: float = 0.15, base: Path | None = None, say=print) -> None:
        self.jobs, self.seed, self.drain_s, self.rate = jobs, seed, drain_s, rate
        self.one_each, self.optimize_share = one_each, optimize_share
        self.rng = random.Random(seed)
        self.base = base or Path(tempfile.mkdtemp(prefix="stylefarm-soak-"))
        self.say = say
        self.faults: list[Fault] = []
        self.submissions: list[Submission] = []
        self.died: dict[int, float] = {}  # pid -> when we killed it / saw it exit
        self.lock = threading.Lock()
        self.faults_done = threading.Event()
        self.restarting: set[str] = set()  # workers killed or stopped and not ready again yet
        self.farm: Farm | None = None
        self.redis: RedisServer | None = None
        self.pg: PostgresServer | None = None
        self.s3: S3Server | None = None
        self.sweeper: ManagedProcess | None = None

    # --- the farm --------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        proc, url = redis_process(self.base / "redis", log_dir=self.base / "logs", appendonly=True, databases=256)
        proc.start().wait_ready()
        self.redis = RedisServer(proc, url)
        self.pg = PostgresServer.start()
        self.s3 = S3Server.start(self.base)
        self.farm = start_farm("postgres-s3", home=self.base / "farm", redis=self.redis, postgres=self.pg, s3=self.s3,
                               workers=3, extra_env={"STYLEFARM_LOG_FORMAT": "json"})
        module = ["-m", "worker.sweeper", "--loop"] if (REPO / "worker" / "sweeper.py").exists() \
            else ["-m", "worker.reconcile", "--loop", "10"]
        self.sweeper = ManagedProcess("sweeper", [sys.executable, *module], env=self.farm.env, cwd=REPO,
                                      log_path=self.farm.home / "logs" / "sweeper.log", stop_timeout=5, tier=1)
        self.farm.stack.start(self.sweeper, wait=False)
        self.say(f"farm up in {time.monotonic() - t0:.0f}s: {self.farm.api_url}, 3 workers, "
                 f"sweeper: {' '.join(module[1:])}, home {self.base}")

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.close()
        for server in (self.s3, self.redis, self.pg):
            if server is not None:
                with contextlib.suppress(Exception):
                    if server is self.s3:  # never leave it stopped
                        server.process.signal(signal.SIGCONT, group=True)
                    server.stop()

    # --- load ------------------------------------------------------------------------
    def _inputs(self) -> tuple[str, str]:
        assert self.farm is not None
        yy, xx = np.mgrid[0:96, 0:128]
        content = np.stack([xx * 2 % 256, yy * 2 % 256, (xx + yy) % 256], -1).astype(np.uint8)  # (H, W, 3)
        style = (np.random.default_rng(self.seed).random((64, 64, 3)) * 255).astype(np.uint8)  # (H, W, 3)
        return self.farm.upload(png_bytes(content), "content.png"), self.farm.upload(png_bytes(style), "style.png")

    def _spec(self, content: str, style: str) -> dict[str, Any]:
        if self.rng.random() < self.optimize_share:
            return {"method": "optimize", "content": content, "styles": [{"image": style}], "size": 48,
                    "steps": self.rng.randint(20, 40), "optimizer": "adam", "learning_rate": 5.0,
                    "style_layers": ["relu1_1", "relu2_1"], "content_layers": ["relu2_1"]}
        return {"method": "fast", "content": content, "size": self.rng.choice([32, 48, 64]),
                "style": self.rng.randint(0, 3)}

    def submit_all(self, content: str, style: str) -> None:
        """Submit ``jobs`` jobs at ``rate``/s; a transport error or 5xx is retried with the
        same Idempotency-Key (so a retry can never make a second job)."""
        assert self.farm is not None
        client = httpx.Client(base_url=self.farm.api_url, timeout=10)
        start = time.monotonic()
        last_fault_by = int(self.jobs * LAST_FAULT_AT)
        try:
            for i in range(self.jobs):
                if i == last_fault_by and not self.faults_done.wait(600):
                    self.say("faults still not injected after 600 s; submitting the rest")
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                spec = self._spec(content, style)
                sub = Submission(key=f"soak-{self.seed}-{i}-{uuid.uuid4().hex[:8]}", method=spec["method"],
                                 at=time.time())
                for attempt in range(4):
                    try:
                        r = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": sub.key})
                        sub.status = r.status_code
                        if r.status_code in (200, 202):
                            sub.job_id = r.json()["id"]
                            break
                        sub.error = r.text[:200]
                        if r.status_code < 500:
                            break
                    except httpx.HTTPError as exc:
                        sub.status, sub.error = None, f"{type(exc).__name__}: {exc}"[:200]
                    time.sleep(1 + attempt)
                with self.lock:
                    self.submissions.append(sub)
        finally:
            client.close()

    # --- faults ----------------------------------------------------------------------
    def _group_pids(self, proc: ManagedProcess) -> list[int]:
        if proc.pid is None:
            return []
        pids, todo = [], [proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(child_pids(pid))
        return pids

    def _restart(self, w: ManagedProcess) -> None:
        w.stop(timeout=0)  # reap, close the log handle
        w.start()
        with contextlib.suppress(Exception):
            w.wait_ready(180)

    def inject(self, kind: str) -> Fault:
        assert self.farm is not None and self.redis is not None and self.s3 is not None
        fault = Fault(kind, time.time())
        workers = [w for w in self.farm.workers if w.alive() and w.name not in self.restarting
                   and (kind != "kill_child" or (w.pid and child_pids(w.pid)))] or self.farm.workers
        if kind in ("kill_worker", "term_worker", "kill_child"):
            busy = self.busy_workers()  # a fault lands mid-job where it can
            w = self.rng.choice([w for w in workers if w.name in busy] or workers)
            fault.target = w.name
            if kind == "kill_child":
                kids = child_pids(w.pid) if w.pid else []
                if not kids:
                    fault.note = "no pool child"
                else:
                    pid = self.rng.choice(kids)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    fault.pids, fault.at = [pid], time.time()
                    self.died[pid] = fault.at
                fault.ended = time.time()
                return fault
            fault.pids = self._group_pids(w)
            if kind == "kill_worker":
                fault.at = time.time()
                w.kill()
                for pid in fault.pids:
                    self.died[pid] = fault.at
            else:
                fault.at = time.time()
                w.signal(signal.SIGTERM)
                assert w.proc is not None
                try:
                    w.proc.wait(60)
                    fault.note = "left gracefully"
                except Exception:
                    fault.note = "did not leave in 60 s; killed"
                    w.kill()
                gone_at = time.time()
                for pid in fault.pids:
                    self.died[pid] = gone_at
            pause = self.rng.uniform(1, 3)

            def restart() -> None:  # in the background: the next fault need not wait for it
                time.sleep(pause)
                self._restart(w)
                fault.ended = time.time()
                self.restarting.discard(w.name)

            self.restarting.add(w.name)

            threading.Thread(target=restart, daemon=True).start()
            return fault
        elif kind == "redis_restart":
            fault.target = "redis"
            self.redis.process.stop()
            time.sleep(self.rng.uniform(3, 6))
            self.redis.process.start().wait_ready()
        elif kind == "s3_pause":
            fault.target = "s3"
            self.s3.process.signal(signal.SIGSTOP, group=True)
            time.sleep(self.rng.uniform(8, 15))
            self.s3.process.signal(signal.SIGCONT, group=True)
        fault.ended = time.time()
        return fault

    def busy_workers(self) -> set[str]:
        """Names of the workers that hold a running job now (from SQL)."""
        assert self.farm is not None
        from sqlalchemy import create_engine, select

        from shared.db.orm import Job
        from shared.db.session import normalize_url

        engine = create_engine(normalize_url(self.farm.db_url))
        try:
            with engine.connect() as conn:
                names = conn.execute(select(Job.worker).where(Job.status == "running")).scalars().all()
        except Exception:
            return set()
        finally:
            engine.dispose()
        return {n.split("@", 1)[0] for n in names if n}

    def inject_all(self, plan: list[tuple[int, str]], done: threading.Event) -> None:
        for index, kind in plan:
            while len(self.submissions) < index and not done.is_set():
                time.sleep(0.1)
            try:
                fault = self.inject(kind)
            except Exception as exc:
                fault = Fault(kind, time.time(), note=f"injection failed: {exc}"[:200])
            self.say(f"  job {len(self.submissions)}: fault {fault.kind} {fault.target} {fault.note}".rstrip())
            with self.lock:
                self.faults.append(fault)
        self.faults_done.set()

    # --- the run ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            self.start()
            content, style = self._inputs()
            plan = plan_faults(self.jobs, self.rng, self.one_each)
            self.say(f"submitting {self.jobs} jobs at {self.rate}/s with {len(plan)} faults")
            start = time.monotonic()
            done = threading.Event()
            faults = threading.Thread(target=self.inject_all, args=(plan, done), daemon=True)
            faults.start()
            self.submit_all(content, style)
            done.set()
            faults.join()
            submitted_s = time.monotonic() - start
            drained = self.drain()
            report = self.account(submitted_s, drained)
            report["home"] = str(self.base)
            return report
        finally:
            self.stop()

    def acked_ids(self) -> list[str]:
        return [s.job_id for s in self.submissions if s.job_id]

    def rows(self) -> dict[str, dict]:
        assert self.farm is not None
        ids = self.acked_ids()
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 500):
            out.update(self.farm.db_rows(ids[i:i + 500]))
        return out

    def drain(self) -> float:
        """Wait until every acknowledged job is final, or ``drain_s``; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.drain_s:
            rows = self.rows()
            open_ = [r for r in rows.values() if r["status"] not in FINAL]
            if not open_ and len(rows) == len(self.acked_ids()):
                break
            time.sleep(2)
        return time.monotonic() - t0

    # --- accounting ------------------------------------------------------------------
    def holders(self) -> list[Holder]:
        """Claims read from the workers' JSON logs, each ended by its holder's end line, its
        death, or its next claim (a pool child runs one task at a time)."""
        assert self.farm is not None
        events: list[tuple[float, int, str, str, str]] = []  # (ts, pid, job, message, worker)
        for w in self.farm.workers:
            if not w.log_path or not w.log_path.exists():
                continue
            for line in w.log_path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    ev = json.loads(line)
                    ts = datetime.fromisoformat(ev["ts"]).timestamp()
                except (ValueError, KeyError):
                    continue
                if ev.get("job_id"):
                    events.append((ts, int(ev.get("pid", 0)), str(ev["job_id"]), str(ev.get("message", "")), w.name))
        events.sort()
        holders: list[Holder] = []
        live_by_pid: dict[int, Holder] = {}
        for ts, pid, job, msg, wname in events:
            m = CLAIM_RE.search(msg)
            if m:
                prev = live_by_pid.get(pid)
                if prev is not None and prev.ended is None:
                    prev.ended, prev.how = ts, "next claim"
                token = TOKEN_RE.search(msg)
                h = Holder(job, wname, pid, m.group(2), ts, token=int(token.group(1)) if token else None)
                holders.append(h)
                live_by_pid[pid] = h
                continue
            h = live_by_pid.get(pid)
            if h is not None and h.job_id == job and h.ended is None and END_RE.search(msg):
                h.ended, h.how = ts, msg[:80]
        for h in holders:
            died = self.died.get(h.pid)
            if died is not None and died >= h.claimed and (h.ended is None or died < h.ended):
                h.ended, h.how = died, "killed"
        return holders

    def result_objects(self) -> dict[str, list[str]]:
        """Stored objects per job id under ``tenants/<t>/jobs/<id>/`` (preview.png excluded)."""
        assert self.s3 is not None
        out: dict[str, list[str]] = collections.defaultdict(list)
        paginator = self.s3.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.s3.bucket, Prefix="tenants/"):
            for obj in page.get("Contents", []):
                parts = obj["Key"].split("/")
                if len(parts) >= 5 and parts[2] == "jobs" and parts[-1] != "preview.png":
                    out[parts[3]].append(obj["Key"])
        return out

    def account(self, submitted_s: float, drained_s: float) -> dict[str, Any]:
        rows = self.rows()
        acked = self.acked_ids()
        now = time.time()
        final = {i: r for i, r in rows.items() if r["status"] in FINAL}
        succeeded = [i for i, r in final.items() if r["status"] == "succeeded"]
        failed = {i: r for i, r in final.items() if r["status"] == "failed"}
        reasons = collections.Counter(
            ((r.get("error") or {}).get("type", "?").rsplit("/", 1)[-1]) for r in failed.values())
        lost = [i for i in acked if i not in rows]
        stuck = {i: f"{r['status']} attempts={r['attempts']} worker={r['worker']}" for i, r in rows.items()
                 if r["status"] not in FINAL}

        holders = self.holders()
        by_job: dict[str, list[Holder]] = collections.defaultdict(list)
        for h in holders:
            by_job[h.job_id].append(h)
        twice: list[dict[str, Any]] = []
        for job, hs in by_job.items():
            hs.sort(key=lambda h: h.claimed)
            for a_i, a in enumerate(hs):
                for b in hs[a_i + 1:]:
                    a_end = a.ended if a.ended is not None else now
                    if b.claimed < a_end and (a.pid, a.task_id) != (b.pid, b.task_id):
                        twice.append({"job": job, "first": f"{a.worker}/{a.pid} task {a.task_id} token {a.token}",
                                      "second": f"{b.worker}/{b.pid} task {b.task_id} token {b.token}",
                                      "overlap_s": round(a_end - b.claimed, 2), "first_end": a.how or "never"})
        # a fencing token taken by two claims of one job would let both write
        reused = [j for j, hs in by_job.items()
                  if len({h.token for h in hs if h.token is not None}) < sum(h.token is not None for h in hs)]
        objects = self.result_objects()
        duplicated = {j: keys for j, keys in objects.items() if j in rows and len(keys) > 1}

        success_times = sorted(r["finished_at"].timestamp() for r in final.values()
                               if r["status"] == "succeeded" and r["finished_at"] is not None)
        fault_rows = []
        t0 = self.submissions[0].at if self.submissions else 0.0
        for f in self.faults:
            after = next((t for t in success_times if t > f.at), None)
            held = [h.job_id for h in holders if h.pid in f.pids and h.claimed <= f.at
                    and (h.ended is None or h.ended >= f.at)]
            held_final = [rows[j]["finished_at"].timestamp() - f.at for j in held
                          if j in final and rows[j]["finished_at"] is not None]
            fault_rows.append({
                "kind": f.kind, "target": f.target, "t": round(f.at - t0, 1),
                "lasted_s": round(max(0.0, f.ended - f.at), 1),
                "first_success_after_s": None if after is None else round(after - f.at, 1),
                "held_jobs": len(held),
                "held_jobs_final_after_s": None if not held else (round(max(held_final), 1)
                                                                  if len(held_final) == len(held) else "not final"),
                "note": f.note,
            })
        slow = [f for f in fault_rows if f["first_success_after_s"] is None
                or f["first_success_after_s"] > RECOVERY_GOAL_S]
        goals = {
            "lost": len(lost) == 0,
            "run_twice_concurrently": len(twice) == 0 and not reused,
            "duplicated_results": len(duplicated) == 0,
            "stuck": len(stuck) == 0,
            "recovery_within_60s": not slow,
        }
        attempts = collections.Counter(r["attempts"] for r in rows.values())
        return {
            "config": {"jobs": self.jobs, "seed": self.seed, "drain_s": self.drain_s, "rate": self.rate,
                       "workers": 3, "sweeper": self.sweeper.argv[2] if self.sweeper else None},
            "machine": cpu_line(),
            "submitted": len(self.submissions),
            "acknowledged": len(acked),
            "not_acknowledged": [asdict(s) for s in self.submissions if not s.job_id],
            "succeeded": len(succeeded),
            "failed": len(failed),
            "failed_reasons": dict(reasons),
            "canceled": sum(1 for r in final.values() if r["status"] == "canceled"),
            "lost": lost,
            "stuck": stuck,
            "run_twice_concurrently": twice,
            "duplicated_results": duplicated,
            "claims": len(holders),
            "fencing_tokens_seen": sum(h.token is not None for h in holders),
            "fencing_tokens_reused": reused,
            "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
            "faults": fault_rows,
            "submit_s": round(submitted_s, 1),
            "drain_s_used": round(drained_s, 1),
            "goals": goals,
            "ok": all(goals.values()),
        }


def table(report: dict[str, Any]) -> str:
    g = report["goals"]
    mark = {True: "ok", False: "MISSED"}
    lines = [
        report["machine"],
        f"jobs {report['config']['jobs']}, seed {report['config']['seed']}, rate {report['config']['rate']}/s, "
        f"3 workers, sweeper {report['config']['sweeper']}; submitted in {report['submit_s']}s, "
        f"drained {report['drain_s_used']}s",
        "",
        "| count | value | goal |",
        "|---|---:|---|",
        f"| submitted | {report['submitted']} | |",
        f"| acknowledged (202) | {report['acknowledged']} | |",
        f"| succeeded | {report['succeeded']} | |",
        f"| failed | {report['failed']} | {', '.join(f'{k}: {v}' for k, v in report['failed_reasons'].items())} |",
        f"| lost | {len(report['lost'])} | 0: {mark[g['lost']]} |",
        f"| run twice concurrently | {len(report['run_twice_concurrently'])} | "
        f"0: {mark[g['run_twice_concurrently']]} |",
        f"| duplicated results | {len(report['duplicated_results'])} | 0: {mark[g['duplicated_results']]} |",
        f"| stuck after drain | {len(report['stuck'])} | 0: {mark[g['stuck']]} |",
        f"| claims (fencing log) | {report['claims']} (with a fencing token: {report['fencing_tokens_seen']}, "
        f"token reused: {len(report['fencing_tokens_reused'])}) | |",
        f"| attempts per job | {report['attempts_histogram']} | |",
        "",
        "| fault | target | at s | lasted s | first success after s | jobs held | held jobs final after s | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for f in report["faults"]:
        lines.append(f"| {f['kind']} | {f['target']} | {f['t']} | {f['lasted_s']} | {f['first_success_after_s']} | "
                     f"{f['held_jobs']} | {f['held_jobs_final_after_s']} | {f['note']} |")
    lines.append("")
    lines.append(f"recovery within {RECOVERY_GOAL_S:.0f}s: {mark[g['recovery_within_60s']]}; "
                 f"overall: {'PASS' if report['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-s", type=float, default=300.0, help="seconds to wait for the last jobs to end")
    parser.add_argument("--rate", type=float, default=1.0, help="jobs submitted per second")
    parser.add_argument("--one-each", action="store_true", help="one fault of each kind (the e2e test's plan)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--keep", action="store_true", help="keep the farm's folder (logs) after the run")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)
    soak = Soak(jobs=args.jobs, seed=args.seed, drain_s=args.drain_s, rate=args.rate, one_each=args.one_each,
                say=lambda m: print(m, flush=True))
    report = soak.run()
    print(table(report))
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    if not args.keep:
        shutil.rmtree(soak.base, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
