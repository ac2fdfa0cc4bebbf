"""The Kubernetes manifests agree with the code: the workers consume every queue the farm
sends to, and KEDA scales them on exactly the Redis lists those queues' messages wait in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from shared.broker.celery_config import QUEUES, priority_list_name, queue_list_names
from shared.jobs.methods import REGISTRY
from shared.settings import Settings

from harness import RedisServer

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _one(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _documents(name) if d["kind"] == kind]
    return doc


def _worker_queues() -> tuple[str, list[str]]:
    """The worker Deployment's name and the queues of its ``-Q`` argument."""
    deployment = _one("worker.yaml", "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    return deployment["metadata"]["name"], args[args.index("-Q") + 1].split(",")


def _scaled_object() -> dict[str, Any]:
    return _one("keda-scaledobject.yaml", "ScaledObject")


def test_workers_consume_every_queue_the_farm_sends_to() -> None:
    _, queues = _worker_queues()
    assert sorted(queues) == sorted(QUEUES)
    assert {m.queue for m in REGISTRY.values()} <= set(queues)


def test_keda_scales_the_workers_on_exactly_the_lists_they_consume() -> None:
    # given the queues the worker deployment consumes
    name, queues = _worker_queues()
    consumed = [name for q in queues for name in queue_list_names(q)]
    # when reading the ScaledObject
    scaled = _scaled_object()
    triggers = scaled["spec"]["triggers"]
    # expect it to scale that deployment, one redis trigger per list, no list missing or extra
    assert scaled["spec"]["scaleTargetRef"]["name"] == name
    assert all(t["type"] == "redis" for t in triggers)
    watched = [t["metadata"]["listName"] for t in triggers]
    assert sorted(watched) == sorted(consumed) and len(set(watched)) == len(watched)
    # and the demand is the SUM of every list (the formula names each trigger exactly once)
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    terms = [term.strip() for term in modifiers["formula"].split("+")]
    assert sorted(terms) == sorted(t["name"] for t in triggers)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", term) for term in terms)
    assert float(modifiers["target"]) > 0 and float(modifiers["activationTarget"]) == 0


def test_keda_reads_the_redis_the_farm_is_configured_with() -> None:
    config = _one("config.yaml", "ConfigMap")["data"]
    broker = urlsplit(Settings(broker_url=config["STYLEFARM_BROKER_URL"]).broker_url)
    database = (broker.path or "/0").lstrip("/") or "0"
    for trigger in _scaled_object()["spec"]["triggers"]:
        assert trigger["metadata"]["address"] == broker.netloc
        assert trigger["metadata"]["databaseIndex"] == database


def test_a_message_of_every_priority_lands_in_a_list_keda_watches(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    from shared.broker.client import enqueue_job

    # given a broker no worker consumes (database 7; the session's farms use 0)
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    watched = {t["metadata"]["listName"] for t in _scaled_object()["spec"]["triggers"]}
    try:
        for queue in QUEUES:
            for priority in range(10):
                # when a job of this priority is sent
                enqueue_job(f"job-{queue}-{priority}", queue, priority=priority, settings=Settings(broker_url=url))
                # expect its message in the list named for it, which KEDA watches
                name = priority_list_name(queue, priority)
                assert client.llen(name) == 1, (queue, priority, name, client.keys("*"))
                assert name in watched
    finally:
        client.flushdb()
