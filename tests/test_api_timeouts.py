"""Nothing hangs the API: a real uvicorn API whose S3 server (moto) or Redis stops answering
(SIGSTOP: connections still open, no reply ever comes)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from api.routes.health import CACHE_S
from shared.cli.stack import ManagedProcess, api_process, child_env
from shared.imaging import png_bytes

from harness import S3_KEY, RedisServer, S3Server

#: Redis database of this test's broker: nothing consumes it.
BROKER_DB = 14
CONCURRENT_PROBES = 45


def _start_api(home: Path, overrides: dict[str, str]) -> tuple[ManagedProcess, str]:
    """A migrated SQLite database under ``home`` and the API on it, ready."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STYLEFARM_", "AWS_"))}
    env = child_env({"STYLEFARM_HOME": str(home), **overrides}, base=base)
    subprocess.run([sys.executable, "-c", "from shared.db.migrate import upgrade; upgrade()"], env=env, check=True)
    api, url = api_process(env, log_dir=home / "logs")
    try:
        api.start().wait_ready()
    except BaseException:
        api.stop()
        raise
    return api, url


def _timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


@pytest.mark.slow
def test_given_hung_s3_expect_probes_health_and_job_reads_answer_within_a_second(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # given the API on SQLite + a moto S3 server of its own, and a queued job
    s3 = S3Server.start(tmp_path)
    broker = redis_server.url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    api, url = _start_api(
        tmp_path,
        {
            "STYLEFARM_BROKER_URL": broker,
            "STYLEFARM_STORAGE": "s3",
            "STYLEFARM_S3_ENDPOINT_URL": s3.endpoint,
            "STYLEFARM_S3_BUCKET": s3.bucket,
            "STYLEFARM_S3_ACCESS_KEY": S3_KEY,
            "STYLEFARM_S3_SECRET_KEY": S3_KEY,
        },
    )
    stopped = False
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            content = client.post("/v1/inputs", files={"file": ("c.png", png_bytes(_image()), "image/png")})
            assert content.status_code in (200, 201), content.text
            job = client.post("/v1/jobs", json={"method": "fast", "content": content.json()["id"]})
            assert job.status_code == 202, job.text
            job_id = job.json()["id"]

            # when S3 stops answering (the process is stopped: connections open, no reply)
            os.kill(s3.process.pid, signal.SIGSTOP)
            stopped = True
            time.sleep(CACHE_S + 0.1)  # the last answer of readiness (all ok) is no longer reused
            # and 45 readiness probes arrive at once
            with concurrent.futures.ThreadPoolExecutor(CONCURRENT_PROBES) as pool:
                probes = list(pool.map(lambda _: _timed(client, "GET", "/readyz"), range(CONCURRENT_PROBES)))
            # expect every probe answered 503 within about the 1 s deadline, naming the storage
            slowest = max(seconds for _, seconds in probes)
            print(f"\n{CONCURRENT_PROBES} concurrent /readyz with S3 stopped: slowest {slowest:.2f}s")
            for response, _ in probes:
                assert response.status_code == 503, response.text
                assert response.json()["checks"]["storage"].startswith("error: timed out")
                assert response.json()["checks"]["database"] == "ok" and "storage" in response.json()["detail"]
            assert slowest < 2.5
            # and liveness and job reads answer within a second each, right after
            health, health_s = _timed(client, "GET", "/healthz")
            read, read_s = _timed(client, "GET", f"/v1/jobs/{job_id}")
            print(f"/healthz {health_s:.3f}s, GET job {read_s:.3f}s")
            assert health.status_code == 200 and health_s < 1.0
            assert read.status_code == 200 and read.json()["status"] == "queued" and read_s < 1.0
            # and an upload that needs S3 fails with a 503 problem in seconds, not minutes
            upload, upload_s = _timed(client, "POST", "/v1/inputs", files={"file": ("d.png", png_bytes(_image(9)))})
            print(f"upload with S3 stopped: {upload.status_code} after {upload_s:.1f}s")
            assert upload.status_code == 503 and upload_s < 20
            # when S3 answers again, so does readiness (after the probe's short cache)
            os.kill(s3.process.pid, signal.SIGCONT)
            stopped = False
            deadline = time.monotonic() + 20
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "readiness did not recover after S3 came back"
                time.sleep(0.3)
    finally:
        if stopped:
            os.kill(s3.process.pid, signal.SIGCONT)
        api.stop()
        s3.stop()


def _image(seed: int = 3):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)


@pytest.mark.slow
def test_given_hung_redis_expect_submit_read_and_probe_answer_in_seconds(tmp_path: Path) -> None:
    # given the API on SQLite + local storage and a Redis of its own
    redis_server = RedisServer.start(tmp_path)
    api, url = _start_api(tmp_path, {"STYLEFARM_BROKER_URL": redis_server.url, "STYLEFARM_STORAGE": "local"})
    pid = redis_server.process.pid
    assert pid is not None
    stopped = False
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            content = client.post("/v1/inputs", files={"file": ("c.png", png_bytes(_image()), "image/png")})
            spec = {"method": "fast", "content": content.json()["id"]}
            queued = client.post("/v1/jobs", json=spec).json()["id"]
            # when Redis stops answering
            os.kill(pid, signal.SIGSTOP)
            stopped = True
            time.sleep(CACHE_S + 0.1)
            # expect a submission accepted within seconds (the job stays queued for the sweeper)
            submit, submit_s = _timed(client, "POST", "/v1/jobs", json=spec)
            # a job read (its place in line reads the fleet in Redis) and the probes within about a second
            read, read_s = _timed(client, "GET", f"/v1/jobs/{queued}")
            ready, ready_s = _timed(client, "GET", "/readyz")
            health, health_s = _timed(client, "GET", "/healthz")
            print(f"\nRedis stopped: submit {submit_s:.2f}s, GET job {read_s:.2f}s, /readyz {ready_s:.2f}s")
            assert submit.status_code == 202 and submit.json()["status"] == "queued" and submit_s < 8
            assert read.status_code == 200 and read.json()["position"] == 0 and read_s < 1.5
            assert read.json()["estimated_start_s"] is None  # the fleet is unknown while Redis is hung
            assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("error") and ready_s < 1.5
            assert health.status_code == 200 and health_s < 1.0
            # and the fleet endpoints answer a 503 problem, not a hang
            workers, workers_s = _timed(client, "GET", "/v1/workers")
            assert workers.status_code == 503 and workers_s < 5
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        api.stop()
        redis_server.stop()
