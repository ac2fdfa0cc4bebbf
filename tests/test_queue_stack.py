"""The queue client and the process management, against a real Redis."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from shared.broker.celery_config import RUN_JOB_TASK_NAME, celery_config, kombu_priority, queue_list_names
from shared.cli.stack import ManagedProcess, Stack, free_port
from shared.errors import BrokerUnavailable
from shared.settings import Settings

from harness import RedisServer, gone


def _settings(monkeypatch: pytest.MonkeyPatch, url: str) -> Settings:
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    return Settings()


def test_config_is_json_only_late_ack_no_backend() -> None:
    conf = celery_config(Settings())
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1 and conf["result_backend"] is None
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert {q.name for q in conf["task_queues"]} == {"gpu", "cpu"}


def test_enqueue_unreachable_broker_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.broker.client import enqueue_job

    s = _settings(monkeypatch, f"redis://127.0.0.1:{free_port()}/0")
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        enqueue_job("job-1", "gpu", settings=s)
    assert info.value.retryable
    assert time.monotonic() - t0 < 10


def test_enqueue_sends_task_by_name_with_job_id(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    import redis

    from shared.broker.client import enqueue_job, queue_lengths

    # database 7: the session's farms consume database 0 and would take these messages
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    s = _settings(monkeypatch, url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    task_id = enqueue_job("job-42", "cpu", priority=0, settings=s)
    urgent_id = enqueue_job("job-43", "cpu", priority=9, settings=s)
    assert queue_lengths(s)["cpu"] == 2
    normal_list, urgent_list = f"cpu:{kombu_priority(0)}", "cpu"
    assert normal_list in queue_list_names("cpu") and urgent_list in queue_list_names("cpu")
    msg = json.loads(client.lpop(normal_list))
    assert msg["headers"]["task"] == RUN_JOB_TASK_NAME and msg["headers"]["id"] == task_id
    assert msg["content-type"] == "application/json"
    assert json.loads(base64.b64decode(msg["body"]))[0] == ["job-42"]
    urgent = json.loads(client.lpop(urgent_list))
    assert urgent["headers"]["id"] == urgent_id
    client.flushdb()


def test_given_a_pooled_connection_when_redis_restarts_or_hangs_expect_a_send_or_a_fast_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os
    import signal

    from shared.broker.client import SOCKET_TIMEOUT_S, enqueue_job, forget_clients, queue_lengths

    # given a Redis of its own and one job sent (the client now holds a pooled connection)
    server = RedisServer.start(tmp_path)
    s = _settings(monkeypatch, server.url)
    forget_clients()
    try:
        enqueue_job("job-1", "gpu", settings=s)
        # when Redis restarts (the pooled connection is now dead) and a job is sent
        server.process.stop()
        server.process.start().wait_ready()
        enqueue_job("job-2", "gpu", settings=s)
        # expect it sent, on a new connection, with no refusal (no persistence: only job-2 is there)
        assert queue_lengths(s)["gpu"] == 1
        # and when Redis hangs, a refusal after one socket timeout, not several
        pid = server.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                enqueue_job("job-3", "gpu", settings=s)
            took = time.monotonic() - t0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert took < SOCKET_TIMEOUT_S + 1.5
        # and once it answers again, sends go through (job-3's push may have reached the paused
        # server and run on resume: a refused send can still arrive, which the claim deduplicates)
        enqueue_job("job-4", "gpu", settings=s)
        assert queue_lengths(s)["gpu"] in (2, 3)
    finally:
        forget_clients()
        server.stop()


def test_managed_process_stop_kills_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The leader ignores SIGTERM and has a background child: stop() must still leave nothing.
    script = f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait"
    proc = ManagedProcess("sleepy", ["bash", "-c", script], log_path=tmp_path / "p.log",
                          ready=pidfile.exists, stop_timeout=1)
    with Stack() as stack:
        stack.start(proc)
        child = int(pidfile.read_text())
        assert proc.alive()
    assert not proc.alive()
    assert gone(child), f"background child {child} survived stop()"


def test_wait_ready_reports_early_exit_with_log(tmp_path: Path) -> None:
    from shared.cli.stack import StackError

    proc = ManagedProcess("broken", ["bash", "-c", "echo boom-happened; exit 3"], log_path=tmp_path / "b.log",
                          ready=lambda: False)
    with pytest.raises(StackError, match="boom-happened"):
        proc.start().wait_ready(10)
    proc.stop()
    assert proc.returncode() == 3


def test_settings_fields_with_env_aliases_also_take_their_own_names() -> None:
    # given fields that read STYLEFARM_* or the conventional env names (REDIS_URL, AWS_*)
    from shared.settings import Settings

    # when built in code by field name
    s = Settings(broker_url="redis://elsewhere:1/0", database_url="sqlite:///x.db", s3_region="eu-west-1")
    # expect the values given, not the defaults
    assert (s.broker_url, s.database_url, s.s3_region) == ("redis://elsewhere:1/0", "sqlite:///x.db", "eu-west-1")
