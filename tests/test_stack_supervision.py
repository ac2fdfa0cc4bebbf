"""``stylefarm up`` supervises: the embedded stack's worker, Redis and API are killed, the
supervisor restarts each, the worker is known to the fleet again, and a job still succeeds;
stopping leaves nothing running."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared.cli.stack import EmbeddedStack, ManagedProcess, Stack, Supervisor, redis_ping
from shared.imaging import png_bytes

from harness import child_pids, gone


def _wait(what: str, condition: Callable[[], bool], timeout: float = 120.0) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def _restarted(proc: ManagedProcess, old_pid: int | None) -> Callable[[], bool]:
    return lambda: proc.pid != old_pid and proc.alive() and proc.ready is not None and proc.ready()


def _image():
    import numpy as np

    return np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_given_a_crash_looping_process_expect_restarts_with_growing_backoff(tmp_path: Path) -> None:
    # given a stack with a process that exits at once and one that keeps running
    crashing = ManagedProcess("crashy", ["bash", "-c", "echo run; exit 3"], log_path=tmp_path / "c.log")
    steady = ManagedProcess("steady", ["sleep", "60"], log_path=tmp_path / "s.log")
    stack = Stack("test")
    messages: list[str] = []
    supervisor = Supervisor(stack, say=messages.append, backoff_s=0.1, max_backoff_s=0.4)
    try:
        stack.start(crashing, wait=False)
        stack.start(steady, wait=False)
        steady_pid = steady.pid
        # when supervised for a while
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            supervisor.tick()
            time.sleep(0.02)
        # expect the crashing one restarted again and again, each crash reported with its code,
        # the delay doubling up to its cap; the steady one untouched
        delays = [float(m.split("restarting it in ")[1].split("s")[0]) for m in messages if "exited with code 3" in m]
        assert len(delays) >= 4 and delays[:4] == [0.1, 0.2, 0.4, 0.4], messages
        assert supervisor.restarts["crashy"] >= 3 and "steady" not in supervisor.restarts
        assert steady.pid == steady_pid and steady.alive()
        assert (tmp_path / "c.log").read_text().count("run") >= 4  # every run logged to the same file
    finally:
        stack.stop()
    assert not crashing.alive() and not steady.alive()


@pytest.mark.e2e
@pytest.mark.slow
def test_given_worker_redis_and_api_killed_expect_restarts_and_a_job_still_succeeds(tmp_path: Path) -> None:
    # given the embedded stack, supervised, with a fast fleet heartbeat
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "STYLEFARM_WORKER_HEARTBEAT_S": "1"}
    stack = EmbeddedStack(tmp_path / "home", workers=1, env=env, quiet=True)
    messages: list[str] = []
    supervisor = Supervisor(stack, say=messages.append, backoff_s=0.5)
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.run, args=(stop,), kwargs={"interval_s": 0.2}, daemon=True)
    pids: set[int] = set()
    try:
        stack.up()
        watcher.start()
        worker, redis, api = stack.get("worker1"), stack.get("redis"), stack.get("api")
        client = httpx.Client(base_url=stack.api_url, timeout=30)

        def fleet() -> list[dict]:
            response = client.get("/v1/workers")
            return response.json()["items"] if response.status_code == 200 else []

        _wait("the worker in the fleet", lambda: [w["pid"] for w in fleet()] == [worker.pid])
        (listed,) = fleet()
        assert listed["queues"] == ["cpu", "gpu"] and listed["device"] == "cpu" and listed["state"] == "ready"
        assert listed["memory_bytes"] > 0 and listed["device_name"]

        # when the worker's main process is killed (its pool child is orphaned)
        old_worker = worker.pid
        assert old_worker is not None
        pool = child_pids(old_worker)
        pids.update([old_worker, *pool])
        os.kill(old_worker, signal.SIGKILL)
        # expect it restarted and ready again, its orphans cleaned up, and said so
        took = _wait("the worker's restart", _restarted(worker, old_worker), timeout=180)
        print(f"\nworker restarted and ready {took:.1f}s after SIGKILL")
        assert all(gone(pid, 10) for pid in pool), f"orphaned pool children {pool} still run"
        assert any("worker1" in m and "exited with code -9" in m for m in messages), messages

        # when Redis is killed
        old_redis = redis.pid
        assert old_redis is not None
        pids.add(old_redis)
        port = int(stack.broker_url.rsplit(":", 1)[1].split("/")[0])
        os.kill(old_redis, signal.SIGKILL)
        took = _wait("Redis's restart", lambda: redis.pid != old_redis and redis_ping(port), timeout=60)
        print(f"redis restarted and answering {took:.1f}s after SIGKILL")

        # when the API is killed
        old_api = api.pid
        assert old_api is not None
        pids.add(old_api)
        os.kill(old_api, signal.SIGKILL)
        took = _wait("the API's restart", _restarted(api, old_api), timeout=90)
        print(f"API restarted and ready {took:.1f}s after SIGKILL")

        # expect a job submitted now to succeed
        content = client.post("/v1/inputs", files={"file": ("c.png", png_bytes(_image()), "image/png")})
        assert content.status_code in (200, 201), content.text
        job = client.post("/v1/jobs", json={"method": "fast", "content": content.json()["id"], "size": 64})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        started = time.monotonic()
        final_statuses = ("succeeded", "failed", "canceled")
        _wait("the job to finish", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in final_statuses, 180)
        final = client.get(f"/v1/jobs/{job_id}").json()
        print(f"job {final['status']} in {time.monotonic() - started:.1f}s, attempts {final['attempts']}")
        assert final["status"] == "succeeded", final
        # and the fleet lists the restarted worker (its own pid), with the model its job loaded
        _wait("the fleet to list the restarted worker", lambda: [w["pid"] for w in fleet()] == [worker.pid], 30)
        assert fleet()[0]["models"] == ["multistyle26"] and not fleet()[0]["busy"]
        assert [supervisor.restarts.get(name) for name in ("worker1", "redis", "api")] == [1, 1, 1]

        # when a long job runs, expect the fleet to show it as the worker's current job
        long = {"method": "optimize", "content": content.json()["id"], "styles": [{"image": content.json()["id"]}],
                "size": 64, "steps": 5000}  # fmt: skip
        long_id = client.post("/v1/jobs", json=long).json()["id"]
        _wait("the long job to run", lambda: client.get(f"/v1/jobs/{long_id}").json()["status"] == "running", 120)
        _wait("the fleet to show it", lambda: (fleet()[0]["current_job"] or {}).get("id") == long_id, 30)
        assert fleet()[0]["busy"]
        client.post(f"/v1/jobs/{long_id}/cancel")
        _wait("the cancel", lambda: client.get(f"/v1/jobs/{long_id}").json()["status"] == "canceled", 120)
        _wait("the worker to be idle again", lambda: not fleet()[0]["busy"] and fleet()[0]["current_job"] is None, 30)
        client.close()
    finally:
        stop.set()
        watcher.join(timeout=10)
        for proc in stack.processes:
            if proc.pid is not None:
                pids.update([proc.pid, *child_pids(proc.pid)])
        stack.stop()
    # expect nothing left running after the stop
    assert [pid for pid in sorted(pids) if not gone(pid, 10)] == []
