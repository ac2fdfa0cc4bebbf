"""The service's own cost around the engine, on a real farm (tests/harness.py: PostgreSQL,
Redis, the moto S3 server, the API under uvicorn, Celery prefork workers with one thread).

    python bench/service.py [--quick] [--tiny 20] [--clients 50] [--seed-jobs 10000] [--requests 40]
                            [--batch 24] [--json F]

1. Latency of a tiny job (``fast``, 32 px, one input the worker keeps in memory after the
   first job, so these rows are labelled ``[input cached]``), one at a time on one idle worker: submit-to-start
   (``started_at - created_at`` of the row) and finish-to-result (the client holds the PNG,
   minus ``finished_at``; the client polls every 10 ms, which bounds that figure's resolution),
   and the same finish-to-result for jobs awaited as users do, through the client library's
   ``Client.wait`` (the job's event stream, woken by the database).
2. Per-job overhead: a 512 px ``fast`` job end to end at the client (POST to PNG in hand)
   against the engine's own seconds for it (``metrics.seconds`` from the worker: model from
   memory, decode, network, image; less ``metrics.input_seconds``, the time the engine
   waited for its input's SQL row and bytes, which is the service's):
   ``overhead = end_to_end - engine``, as a fraction of ``engine``. The
   goal's figure gives every job a photo of its own, which no worker has read; the row marked
   ``[input cached on the worker]`` runs as many jobs on one photo read before, whose bytes
   the worker keeps in memory (``worker.input_cache``; the input's SQL row is still read).
3. Tiny jobs per second per worker: ``--tiny`` jobs submitted at once, first start to last finish.
4. API latency with ``--clients`` concurrent clients (asyncio, one connection each, connected
   before the clock starts) against a database holding ``--seed-jobs`` finished jobs (copied
   rows) and no worker, two ways:
   - *like the client library* (the goals): each client submits a job, reads it every
     ``--poll-s`` seconds (``shared.client``'s poll interval) 1-9 times, submits the next;
   - *saturated* (reported): each client alternates ``POST /v1/jobs`` and ``GET /v1/jobs/{id}``
     of a random job with no pause, ``--requests`` of each. 50 requests are then always in
     flight, so latency is ~50 / throughput (Little's law) whatever one request costs: it
     measures throughput, not the latency a client sees.
5. 1 vs 2 worker processes on the same batch of ``--batch`` 512 px ``fast`` jobs, each on a
   photo of its own that no worker has read (2 cores: the
   machine's other tenants share them, so the ratio is an upper bound on what is lost to them).
   The one-worker batch also gives the *capacity overhead*: a worker's time per job beyond the
   engine's (batch time / jobs - median engine part) when jobs queue up (reported beside the
   latency overhead of 2., which is the goal's figure). Every process's CPU time during each
   batch is summed by role (worker, API, S3 server, PostgreSQL, Redis, this client): the farm's
   CPU per job over the two cores bounds what a second worker can add on this one machine.

Exit status 1 when a goal is missed: overhead < 5 %, get p99 < 50 ms and create p99 < 100 ms (the
clients like the client library), 2 workers >= 1.8x one.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench.common import Goal, cpu_info, finish, table  # noqa: E402

from harness import PostgresServer, RedisServer, S3Server, start_farm  # noqa: E402

POLL_S = 0.01


def _png(side: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((side, side, 3)) * 255).astype(np.uint8)  # (H, W, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _photo(variant: int = 0) -> bytes:
    """scikit-image's astronaut as PNG; each ``variant`` differs in one pixel, so it is another
    input (another sha256) that no worker has read yet."""
    from PIL import Image
    from skimage import data

    arr = data.astronaut().copy()  # (512, 512, 3)
    arr[0, 0] = (variant % 256, (variant // 256) % 256, 7)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class Photos:
    """Distinct uploaded copies of the photo, handed out once each: a job on one reads an input
    its worker has not cached (``worker.input_cache``), as a stream of new photos would."""

    def __init__(self, farm: Any) -> None:
        self.farm, self.made = farm, 0

    def fresh(self, n: int) -> list[str]:
        out = [self.farm.upload(_photo(1 + self.made + i), f"photo-{self.made + i}.png") for i in range(n)]
        self.made += n
        return out


def _ts(s: str | None) -> float:
    """An API timestamp (UTC; naive ones are UTC too) -> epoch seconds."""
    if not s:
        return float("nan")
    d = datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if v else float("nan")


def run_to_result(farm: Any, spec: dict) -> dict:
    """POST, poll every POLL_S until final, GET the PNG: client and server timestamps."""
    t_submit = time.time()
    job = farm.create(spec)
    job = farm.wait(job["id"], interval=POLL_S, timeout=600)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('problem')}")
    farm.result_png(job["id"])
    t_result = time.time()
    return {"submit": t_submit, "result": t_result, "created": _ts(job["timings"]["created_at"]),
            "started": _ts(job["timings"]["started_at"]), "finished": _ts(job["timings"]["finished_at"]),
            **engine_part(job)}


def engine_part(job: dict) -> dict[str, float]:
    """The engine's own seconds of a finished job (``engine_s``): the engine's ``metrics.seconds``
    less the time it waited for its inputs (``input_s``: the inputs' SQL rows and bytes, which is
    the service's cost, not the engine's)."""
    metrics = (job.get("result") or {}).get("metrics", {})
    seconds = float(metrics.get("seconds", float("nan")))
    input_s = float(metrics["input_seconds"])  # the worker's (worker.tasks)
    return {"engine_s": seconds - input_s, "input_s": input_s}


def client_wait_runs(farm: Any, spec: dict, n: int) -> list[float]:
    """Finish-to-result of ``n`` jobs awaited the client library's way (``Client.wait``, which
    watches the job's event stream, then ``result_bytes``): seconds from the row's
    ``finished_at`` to the PNG in hand. One warm-up job first (its connection, the stream)."""
    from shared.client import Client

    out = []
    with Client(farm.api_url, api_key="") as client:
        for _ in range(n + 1):
            job = client.submit(spec)
            if client.wait(job.id, timeout=600).status != "succeeded":
                raise RuntimeError(f"job {job.id} did not succeed")
            client.result_bytes(job.id)
            t_result = time.time()
            row = farm.wait(job.id, interval=POLL_S, timeout=60)  # final already: the server's timestamps
            out.append(t_result - _ts(row["timings"]["finished_at"]))
    return out[1:]


def latency_phase(farm: Any, tiny: int, content_tiny: str, photos: Photos, n512: int) -> dict:
    """Tiny jobs on one (cached) input; the 512 px jobs of the goal's figure each on a photo no
    worker has read (``big_runs``), and as many on one photo read before (``cached_runs``)."""
    spec_tiny = {"method": "fast", "content": content_tiny, "size": 32, "style": 1}
    (again,) = photos.fresh(1)
    spec_512 = {"method": "fast", "content": again, "size": 512, "style": 1}
    for _ in range(2):  # warm-up: model load, first connections
        run_to_result(farm, spec_tiny)
        run_to_result(farm, spec_512)
    tiny_runs = [run_to_result(farm, spec_tiny) for _ in range(tiny)]
    f2r_client = client_wait_runs(farm, spec_tiny, tiny)
    big_runs = [run_to_result(farm, {**spec_512, "content": c}) for c in photos.fresh(n512)]
    cached_runs = [run_to_result(farm, spec_512) for _ in range(n512)]
    s2s = [r["started"] - r["created"] for r in tiny_runs]
    f2r = [r["result"] - r["finished"] for r in tiny_runs]
    tiny_e2e = [r["result"] - r["submit"] for r in tiny_runs]
    tiny_engine = [r["engine_s"] for r in tiny_runs]
    big_e2e = [r["result"] - r["submit"] for r in big_runs]
    big_engine = [r["engine_s"] for r in big_runs]
    overhead = [e - g for e, g in zip(big_e2e, big_engine, strict=True)]
    cached_overhead = [r["result"] - r["submit"] - r["engine_s"] for r in cached_runs]
    parts = {  # where a 512 px job's time outside the engine goes (medians, ms)
        "api_submit": [r["created"] - r["submit"] for r in big_runs],
        "queue_to_claim": [r["started"] - r["created"] for r in big_runs],
        "input_read": [r["input_s"] for r in big_runs],
        "worker_outside_engine": [r["finished"] - r["started"] - r["engine_s"] - r["input_s"] for r in big_runs],
        "finish_to_result": [r["result"] - r["finished"] for r in big_runs],
    }
    return {
        "submit_to_start_ms": {"p50": 1000 * statistics.median(s2s), "p99": 1000 * pct(s2s, 99)},
        "finish_to_result_ms": {"p50": 1000 * statistics.median(f2r), "p99": 1000 * pct(f2r, 99)},
        "finish_to_result_client_wait_ms": {"p50": 1000 * statistics.median(f2r_client),
                                            "p99": 1000 * pct(f2r_client, 99)},
        "tiny_end_to_end_ms": {"p50": 1000 * statistics.median(tiny_e2e),
                               "engine_p50": 1000 * statistics.median(tiny_engine)},
        "fast512": {"end_to_end_s": statistics.median(big_e2e), "engine_s": statistics.median(big_engine),
                    "overhead_s": statistics.median(overhead),
                    "overhead_fraction": statistics.median(overhead) / statistics.median(big_engine),
                    "overhead_parts_ms": {k: 1000 * statistics.median(v) for k, v in parts.items()},
                    "cached_input": {
                        "end_to_end_s": statistics.median(r["result"] - r["submit"] for r in cached_runs),
                        "engine_s": statistics.median(r["engine_s"] for r in cached_runs),
                        "overhead_fraction": statistics.median(cached_overhead)
                        / statistics.median(r["engine_s"] for r in cached_runs),
                        "input_read_ms": 1000 * statistics.median(r["input_s"] for r in cached_runs)}},
        "fixed_overhead_fraction_from_tiny": (statistics.median(tiny_e2e) - statistics.median(tiny_engine))
        / statistics.median(big_engine),
    }


def throughput_phase(farm: Any, n: int, content: str) -> dict:
    ids = [farm.create({"method": "fast", "content": content, "size": 32, "style": i % 26})["id"] for i in range(n)]
    jobs = [farm.wait(i, interval=0.05, timeout=600) for i in ids]
    start = min(_ts(j["timings"]["started_at"]) for j in jobs)
    end = max(_ts(j["timings"]["finished_at"]) for j in jobs)
    return {"jobs": n, "seconds": end - start, "jobs_per_s": n / (end - start)}


ROLES = (("celery", "worker"), ("uvicorn", "api"), ("moto", "s3 (moto)"), ("postgres", "postgresql"),
         ("redis", "redis"))


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on the machine, summed by role (the
    farm's parts by their command lines; this benchmark itself as "client"; the rest "other")."""
    hz, me = os.sysconf("SC_CLK_TCK"), os.getpid()
    out: dict[str, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        role = "client" if int(d) == me else next((r for key, r in ROLES if key in cmd), "other")
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / hz
    return out


def batch_phase(farm: Any, n: int, photos: Photos) -> tuple[float, float, dict[str, float]]:
    """``n`` 512 px jobs submitted at once, each on a photo no worker has read: (first created to
    last finished, s; the median engine part, s; CPU ms per job by role meanwhile). Jobs are
    awaited at ``shared.client``'s 1 s poll."""
    contents = photos.fresh(n)  # uploaded before the clock and the CPU count start
    before = cpu_by_role()
    ids = [farm.create({"method": "fast", "content": c, "size": 512, "style": i % 26})["id"]
           for i, c in enumerate(contents)]
    jobs = [farm.wait(i, interval=1.0, timeout=1200) for i in ids]
    after = cpu_by_role()
    wall = max(_ts(j["timings"]["finished_at"]) for j in jobs) - min(_ts(j["timings"]["created_at"]) for j in jobs)
    cpu = {k: 1000 * (v - before.get(k, 0.0)) / n for k, v in sorted(after.items(), key=lambda kv: -kv[1])}
    return wall, statistics.median(engine_part(j)["engine_s"] for j in jobs), cpu


# --- API under concurrency -------------------------------------------------------------------


def seed_rows(db_url: str, template_id: str, n: int) -> None:
    """Copy one finished job row ``n`` times (new ids, spread creation times) in one statement."""
    from sqlalchemy import create_engine, text

    from shared.db.orm import Job
    from shared.db.session import normalize_url

    cols = [c.name for c in Job.__table__.columns]
    expr = {
        "id": "md5(random()::text || g::text)",
        "created_at": "created_at - (g || ' seconds')::interval",
        "idempotency_key": "NULL",
    }
    select_cols = ", ".join(expr.get(c, c) for c in cols)
    sql = (f"INSERT INTO jobs ({', '.join(cols)}) SELECT {select_cols} "
           "FROM jobs, generate_series(1, :n) AS g WHERE id = :t")
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), {"n": n, "t": template_id})
            conn.execute(text("ANALYZE jobs"))
    finally:
        engine.dispose()


async def _connected(api_url: str, n: int) -> list[httpx.AsyncClient]:
    """``n`` clients, each connected (one request answered) before the clock starts: building 50
    httpx clients (an SSL context each) blocks the event loop for about a second, which would show
    up as the first requests' latency although the API never saw them late."""
    pool = [httpx.AsyncClient(base_url=api_url, timeout=60) for _ in range(n)]
    await asyncio.gather(*(c.get("/healthz") for c in pool))
    return pool


async def _timed(lat: list[float], errors: list[str], ok: int, request: Any) -> httpx.Response:
    """Await ``request``; its latency (ms) into ``lat``, a status other than ``ok`` into ``errors``."""
    t = time.perf_counter()
    r = await request
    lat.append(1000 * (time.perf_counter() - t))
    if r.status_code != ok:
        errors.append(f"{r.request.method} {r.status_code}")
    return r


async def _run_clients(api_url: str, clients: int, one: Any) -> None:
    """Run ``one(i, client)`` for each of ``clients`` connected clients, then close them."""
    pool = await _connected(api_url, clients)
    try:
        await asyncio.gather(*(one(i, c) for i, c in enumerate(pool)))
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))


async def api_clients(api_url: str, clients: int, requests: int, spec: dict, ids: list[str]) -> dict[str, list[float]]:
    """Saturated: each client alternates a create and a get of a random job, with no pause."""
    lat: dict[str, list[float]] = {"create": [], "get": []}
    errors: list[str] = []

    async def one(i: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(i)
        for _ in range(requests):
            r = await _timed(lat["create"], errors, 202, client.post("/v1/jobs", json=spec))
            if r.status_code == 202:
                ids.append(r.json()["id"])
            await _timed(lat["get"], errors, 200, client.get(f"/v1/jobs/{rng.choice(ids)}"))

    await _run_clients(api_url, clients, one)
    if errors:
        print(f"API errors: {len(errors)} (first: {errors[:3]})")
    return lat


async def sdk_clients(api_url: str, clients: int, duration_s: float, poll_s: float, polls: int, spec: dict,
                      seed: int = 0) -> dict[str, list[float]]:
    """``clients`` clients that behave like ``shared.client``'s polling wait: each submits a job,
    reads it every ``poll_s`` seconds, 1 to ``2 polls - 1`` times (jobs of mixed lengths, so the
    clients' submits do not fall in step), and submits the next, for ``duration_s``
    (starts spread over the first ``poll_s``). Open loop per client: a slow answer does not
    delay its next request's schedule beyond the answer itself."""
    lat: dict[str, list[float]] = {"create": [], "get": []}
    errors: list[str] = []
    end = 0.0

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal end
        end = end or time.perf_counter() + duration_s  # the clock starts once all are connected
        rng = random.Random(seed * 1000 + i)
        await asyncio.sleep(rng.random() * poll_s)
        while time.perf_counter() < end:
            t = time.perf_counter()
            r = await _timed(lat["create"], errors, 202, client.post("/v1/jobs", json=spec))
            if r.status_code != 202:
                await asyncio.sleep(poll_s)
                continue
            job_id = r.json()["id"]
            for k in range(rng.randint(1, 2 * polls - 1)):  # jobs of mixed lengths (mean ``polls`` reads)
                await asyncio.sleep(max(0.0, t + (k + 1) * poll_s - time.perf_counter()))
                await _timed(lat["get"], errors, 200, client.get(f"/v1/jobs/{job_id}"))

    await _run_clients(api_url, clients, one)
    if errors:
        print(f"API errors: {len(errors)} (first: {errors[:3]})")
    return lat


def api_phase(farm: Any, clients: int, seed_jobs: int, requests: int, content: str,
              sdk_duration_s: float = 30.0, poll_s: float = 1.0) -> dict:
    spec = {"method": "fast", "content": content, "size": 32, "style": 1}
    template = farm.create(spec)["id"]
    from sqlalchemy import create_engine, text

    from shared.db.session import normalize_url

    engine = create_engine(normalize_url(farm.db_url))
    with engine.begin() as conn:  # a finished job to copy (no worker in this farm)
        conn.execute(text("UPDATE jobs SET status = 'succeeded', started_at = created_at, finished_at = created_at "
                          "WHERE id = :i"), {"i": template})
        ids = [r[0] for r in conn.execute(text("SELECT id FROM jobs"))]
    t = time.perf_counter()
    seed_rows(farm.db_url, template, seed_jobs)
    seeded_s = time.perf_counter() - t
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text(f"SELECT id FROM jobs ORDER BY random() LIMIT {min(seed_jobs, 2000)}"))]
        total = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    engine.dispose()
    asyncio.run(api_clients(farm.api_url, 5, 5, spec, list(ids)))  # warm-up
    api = next(p for p in farm.stack.processes if p.name == "api")
    from load import tree_cpu_s

    cpu0, t = tree_cpu_s(api.pid), time.perf_counter()
    lat = asyncio.run(api_clients(farm.api_url, clients, requests, spec, list(ids)))
    seconds, api_cpu = time.perf_counter() - t, tree_cpu_s(api.pid) - cpu0
    n = len(lat["create"]) + len(lat["get"])
    saturated = {"clients": clients, "seconds": seconds, "requests_per_s": n / seconds,
                 "api_cpu_ms_per_request": 1000 * api_cpu / n, "api_cores_used": api_cpu / seconds,
                 **{f"{op}_ms": {"p50": statistics.median(v), "p99": pct(v, 99), "n": len(v)}
                    for op, v in lat.items()}}
    cpu0, t = tree_cpu_s(api.pid), time.perf_counter()
    sdk = asyncio.run(sdk_clients(farm.api_url, clients, sdk_duration_s, poll_s, 5, spec))
    seconds, api_cpu = time.perf_counter() - t, tree_cpu_s(api.pid) - cpu0
    n = len(sdk["create"]) + len(sdk["get"])
    return {"jobs_in_db": total, "seed_s": round(seeded_s, 2), "clients": clients, "poll_s": poll_s,
            "seconds": seconds, "requests_per_s": n / seconds, "api_cpu_ms_per_request": 1000 * api_cpu / max(n, 1),
            "api_cores_used": api_cpu / seconds,
            **{f"{op}_ms": {"p50": statistics.median(v), "p99": pct(v, 99), "n": len(v)} for op, v in sdk.items()},
            "saturated": saturated}


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", type=int, default=20)
    p.add_argument("--n512", type=int, default=5)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seed-jobs", type=int, default=10000)
    p.add_argument("--requests", type=int, default=20, help="creates (and as many gets) per client, saturated")
    p.add_argument("--sdk-seconds", type=float, default=30.0, help="length of the SDK-like (polling) phase")
    p.add_argument("--poll-s", type=float, default=1.0, help="the SDK-like clients' poll interval (shared.client's)")
    p.add_argument("--batch", type=int, default=24,
                   help="512 px jobs per worker-scaling batch (large enough that filling and draining the "
                        "queue, ~50 ms each, stay small against it)")
    p.add_argument("--quick", action="store_true", help="5 tiny, 2 x 512, 10 clients, 1000 rows, batch 4")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--api-only", action="store_true", help="only the API phase")
    only.add_argument("--latency-only", action="store_true", help="only the latency phase (1.), one worker")
    p.add_argument("--backend", choices=["postgres-s3", "sqlite-local"], default="postgres-s3",
                   help="sqlite-local: where PostgreSQL is not installed (the API phase then does not run)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.quick:
        a.tiny, a.n512, a.clients, a.seed_jobs, a.requests, a.batch, a.sdk_seconds = 5, 2, 10, 1000, 5, 4, 10.0
    import importlib.util

    # the results' PNG deflater (shared.imaging.deflate_fast): ~5 ms of a 512 px job's overhead apart
    deflater = "isal" if importlib.util.find_spec("isal") is not None else "zlib"
    report: dict[str, Any] = {"machine": {"cpu": cpu_info(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                                          "png_deflate": deflater},
                              "settings": {k: v for k, v in vars(a).items() if k != "json"}}
    print(f"CPU {report['machine']['cpu']} | load average {report['machine']['loadavg']} | PNG deflate {deflater}")
    base = Path(tempfile.mkdtemp(prefix="stylefarm-service-"))
    redis = pg = s3 = None
    farms: list[Any] = []
    try:
        redis = RedisServer.start(base)
        if a.backend == "postgres-s3":
            pg, s3 = PostgresServer.start(), S3Server.start(base)
        if a.backend == "postgres-s3" and not a.latency_only:
            # API under concurrency: no worker, so created jobs stay queued and nothing renders
            # tenant budgets out of the way: the API test creates thousands of queued jobs with no worker
            big = {"STYLEFARM_QUOTA_MAX_QUEUED_JOBS": "1000000", "STYLEFARM_QUOTA_MAX_JOBS_IN_FLIGHT": "1000000",
                   "STYLEFARM_QUOTA_MAX_COST_IN_FLIGHT": "1e12"}
            api_farm = start_farm("postgres-s3", home=base / "api", redis=redis, postgres=pg, s3=s3, workers=0,
                                  extra_env=big)
            farms.append(api_farm)
            c = api_farm.upload(_png(32, 1), "tiny.png")
            report["api"] = api_phase(api_farm, a.clients, a.seed_jobs, a.requests, c, a.sdk_seconds, a.poll_s)
            api_farm.close()
            farms.remove(api_farm)
            print(f"API: {report['api']}")
            report["loadavg_after_api"] = [round(x, 2) for x in os.getloadavg()]

        if a.api_only:
            return finish(report, [Goal("API get p99", report["api"]["get_ms"]["p99"], 50, higher_is_better=False,
                                        unit=" ms"),
                                   Goal("API create p99", report["api"]["create_ms"]["p99"], 100,
                                        higher_is_better=False, unit=" ms")], a.json)
        farm = start_farm(a.backend, home=base / "run", redis=redis, postgres=pg, s3=s3, workers=1)
        farms.append(farm)
        tiny = farm.upload(_png(32, 2), "tiny.png")
        photos = Photos(farm)
        report["latency"] = latency_phase(farm, a.tiny, tiny, photos, a.n512)
        print(f"latency: {report['latency']}")
        if a.latency_only:
            return finish(report, [Goal("per-job overhead as a fraction of a 512 px fast job",
                                        report["latency"]["fast512"]["overhead_fraction"], 0.05,
                                        higher_is_better=False)], a.json)
        report["throughput"] = throughput_phase(farm, max(10, 2 * a.tiny), tiny)
        print(f"throughput: {report['throughput']}")
        report["loadavg_before_batch"] = [round(x, 2) for x in os.getloadavg()]
        one, engine_one, cpu_one = batch_phase(farm, a.batch, photos)
        farm.add_worker("run-w2")
        batch_phase(farm, 2, photos)  # the new worker's warm-up (model load)
        two, _, cpu_two = batch_phase(farm, a.batch, photos)
        cpu_per_job = sum(v for k, v in cpu_one.items() if k != "other")
        report["workers"] = {"batch": a.batch, "one_worker_s": one, "two_workers_s": two, "speedup": one / two,
                             # a worker's time per job beyond the engine's, when jobs queue up (capacity)
                             "capacity_overhead_fraction": (one / a.batch - engine_one) / engine_one,
                             # the farm's CPU per job over two cores bounds what a second worker can add
                             "cpu_ms_per_job_one": cpu_one, "cpu_ms_per_job_two": cpu_two,
                             "speedup_bound": (one / a.batch) / (cpu_per_job / 1000 / 2),
                             "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        print(f"workers: {report['workers']}")
    finally:
        for f in farms:
            f.close()
        for server in (s3, redis, pg):
            if server is not None:
                server.stop()
        shutil.rmtree(base, ignore_errors=True)

    lat, w = report["latency"], report["workers"]
    nan = {"p50": float("nan"), "p99": float("nan")}
    api = report.get("api") or {"clients": 0, "jobs_in_db": 0, "create_ms": nan, "get_ms": nan}
    rows = [
        {"what": "submit-to-start, tiny job (p50 / p99) [input cached]",
         "value": f"{lat['submit_to_start_ms']['p50']:.0f} / {lat['submit_to_start_ms']['p99']:.0f} ms"},
        {"what": "finish-to-result, tiny job (p50 / p99) [input cached]",
         "value": f"{lat['finish_to_result_ms']['p50']:.0f} / {lat['finish_to_result_ms']['p99']:.0f} ms"},
        {"what": "  the same through the client library's wait (event stream)",
         "value": f"{lat['finish_to_result_client_wait_ms']['p50']:.0f} / "
                  f"{lat['finish_to_result_client_wait_ms']['p99']:.0f} ms"},
        {"what": "tiny job end to end (engine part) [input cached on the worker]",
         "value": f"{lat['tiny_end_to_end_ms']['p50']:.0f} ms ({lat['tiny_end_to_end_ms']['engine_p50']:.0f} ms)"},
        {"what": "512 px fast: end to end / engine", "value": f"{lat['fast512']['end_to_end_s']:.3f} / "
                                                               f"{lat['fast512']['engine_s']:.3f} s"},
        {"what": "per-job overhead / 512 px fast job (a new photo each)",
         "value": f"{lat['fast512']['overhead_fraction']:.1%}"},
        {"what": "  of it: submit / queue to claim / reading the input / rest of the worker / finish to result",
         "value": " / ".join(f"{v:.0f}" for v in lat["fast512"]["overhead_parts_ms"].values()) + " ms"},
        {"what": "  [input cached on the worker] the same photo again: overhead; reading the input",
         "value": f"{lat['fast512']['cached_input']['overhead_fraction']:.1%}; "
                  f"{lat['fast512']['cached_input']['input_read_ms']:.1f} ms"},
        {"what": "tiny jobs per second, one worker [input cached on the worker]",
         "value": f"{report['throughput']['jobs_per_s']:.1f}"},
        {"what": f"API create p50 / p99 ({api['clients']} clients, {api['jobs_in_db']} jobs)",
         "value": f"{api['create_ms']['p50']:.0f} / {api['create_ms']['p99']:.0f} ms"},
        {"what": "API get p50 / p99", "value": f"{api['get_ms']['p50']:.0f} / {api['get_ms']['p99']:.0f} ms"},
        {"what": f"  at {api.get('requests_per_s', float('nan')):.0f} requests/s (clients polling every "
                 f"{api.get('poll_s', float('nan')):g} s)", "value": ""},
        *([{"what": "saturated (no think time): requests/s; create / get p99",
            "value": f"{api['saturated']['requests_per_s']:.0f}; {api['saturated']['create_ms']['p99']:.0f} / "
                     f"{api['saturated']['get_ms']['p99']:.0f} ms"}] if "saturated" in api else []),
        {"what": f"batch of {w['batch']} x 512 px: 1 worker / 2 workers", "value": f"{w['one_worker_s']:.2f} / "
                                                                                 f"{w['two_workers_s']:.2f} s"},
        {"what": "  one worker's time per job beyond the engine (capacity overhead)",
         "value": f"{w['capacity_overhead_fraction']:.1%}"},
        {"what": "  CPU ms per job, one worker: " + ", ".join(
            f"{k} {v:.0f}" for k, v in w["cpu_ms_per_job_one"].items() if v >= 0.5),
         "value": f"bound {w['speedup_bound']:.2f}x"},
    ]
    print()
    table(rows, [("what", "measure", ""), ("value", "value", "")])
    goals = [
        Goal("per-job overhead as a fraction of a 512 px fast job", lat["fast512"]["overhead_fraction"], 0.05,
             higher_is_better=False),
        *([Goal("API get p99", api["get_ms"]["p99"], 50, higher_is_better=False, unit=" ms"),
           Goal("API create p99", api["create_ms"]["p99"], 100, higher_is_better=False, unit=" ms")]
          if "api" in report else []),
        Goal("2 workers vs 1 on one batch", w["speedup"], 1.8, unit="x",
             note="2 cores shared with other processes"),
    ]
    return finish(report, goals, a.json)


if __name__ == "__main__":
    sys.exit(main())
