"""Every method of the registry (``shared.jobs.methods.REGISTRY``) is wired end to end:
the API accepts it, the broker message carries its time limits, the worker task dispatches it
to its engine entry point under its time limit, and the CLI offers it.

Nothing here names a method: each test walks the registry, and ``minimal_spec`` builds a
method's smallest valid spec from its spec model's required fields. A new registry entry is
therefore checked by these tests without editing them.
"""

from __future__ import annotations

import base64
import inspect
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from harness import RedisServer

sys.path.insert(0, str(Path(__file__).parent / "api"))  # the API tests' helpers
from shared.broker.celery_config import QUEUES, celery_config, queue_list_names
from shared.engine.context import EngineContext
from shared.jobs.methods import REGISTRY, Method, parse_spec
from shared.settings import Settings

from api_helpers import EnqueueRecorder, make_client, png_bytes, record_enqueues, upload_id, zip_bytes

METHODS = list(REGISTRY.values())
IDS = list(REGISTRY)


# --- the minimal spec of a method ----------------------------------------------------------


def _example(path: str, annotation: Any) -> Any:
    """A valid value for a required field: a placeholder string that names the field's path
    (an input reference until ``with_inputs`` replaces it), a one-item list, or a nested
    model with its own required fields."""
    while get_origin(annotation) is not None and get_origin(annotation) not in (list, Union):
        annotation = get_args(annotation)[0]  # Annotated[X, ...] -> X
    if annotation is str:
        return f"ref-{path}"
    if get_origin(annotation) is list:
        return [_example(path, get_args(annotation)[0])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _required(annotation, path)
    raise TypeError(f"minimal_spec: no example for required field {path} of type {annotation}; teach _example")


def _required(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    return {
        name: _example(f"{prefix}{name}", info.annotation)
        for name, info in model.model_fields.items()
        if name != "method" and info.is_required()
    }


def minimal_spec(method: Method) -> dict[str, Any]:
    """The smallest valid spec of ``method``: its required fields only, references as
    placeholders (``ref-<field path>``); it validates, so defaults cover everything else."""
    data = {"method": method.name, **_required(method.spec)}
    parse_spec(data)
    return data


def with_inputs(data: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """``data`` with every placeholder reference replaced by its input id."""
    text = json.dumps(data)
    for placeholder, ref in refs.items():
        text = text.replace(json.dumps(placeholder), json.dumps(ref))
    return json.loads(text)


def test_minimal_spec_names_its_references() -> None:
    """Given each method's minimal spec, expect it to name at least one input (every method
    reads images or datasets), so the API test below really uploads and checks inputs."""
    for method in METHODS:
        spec = parse_spec(minimal_spec(method))
        assert spec.image_refs() + spec.video_refs() + spec.dataset_refs(), method.name
        assert all(r.startswith("ref-") for r in spec.image_refs() + spec.video_refs() + spec.dataset_refs())


# --- the registry itself -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_entry_point_resolves_to_a_function_of_spec_and_context(method: Method) -> None:
    fn = method.load_entry_point()
    spec = parse_spec(minimal_spec(method))
    assert isinstance(spec, method.spec)
    inspect.signature(fn).bind(spec, EngineContext())  # raises TypeError if it cannot take (spec, ctx)
    assert 0 < method.soft_limit_s < method.hard_limit_s


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_queue_is_one_the_workers_consume(method: Method) -> None:
    settings = Settings()
    assert method.queue in QUEUES
    assert method.queue in settings.worker_queues.split(",")
    conf = celery_config(settings)
    assert method.queue in {q.name for q in conf["task_queues"]}
    # the broker's defaults and its redelivery timeout cover the method's limits
    assert conf["task_soft_time_limit"] >= method.soft_limit_s and conf["task_time_limit"] >= method.hard_limit_s
    assert settings.visibility_timeout_s > method.hard_limit_s


# --- the API accepts it --------------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> EnqueueRecorder:
    return record_enqueues(monkeypatch)


@pytest.fixture
def client(tmp_path: Path, enqueued: EnqueueRecorder) -> Iterator[TestClient]:
    yield from make_client(Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0"))  # nothing listens there


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_api_refuses_the_spec_until_its_inputs_exist(method: Method, client: TestClient) -> None:
    """Given a minimal spec whose references were never uploaded, expect a 422 that names
    exactly the references the spec model says it has."""
    data = minimal_spec(method)
    spec = parse_spec(data)
    response = client.post("/v1/jobs", json=data)
    assert response.status_code == 422, response.text
    refs = spec.image_refs() + spec.video_refs() + spec.dataset_refs()
    assert sorted(response.json()["missing_inputs"]) == sorted(refs)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_api_accepts_the_spec_and_sends_it_to_its_queue(
    method: Method, client: TestClient, enqueued: EnqueueRecorder
) -> None:
    """Given the inputs uploaded (images as PNGs, datasets as zip archives), expect 202, the
    job on the method's queue with the method's name, and listed under ``?method=``."""
    data = minimal_spec(method)
    spec = parse_spec(data)
    archive = zip_bytes({"a.png": png_bytes(), "b.png": png_bytes(color=(10, 200, 10))})
    refs = {ref: upload_id(client) for ref in spec.image_refs()}
    refs |= {ref: upload_id(client, archive, name="dataset.zip") for ref in spec.dataset_refs()}
    if spec.video_refs():
        from shared.engine.video.clips import shapes_frames, write_clip

        clip = write_clip(shapes_frames(32, 24, 4), 8, "mp4", tone_hz=None)
        refs |= {ref: upload_id(client, clip, name="clip.mp4") for ref in spec.video_refs()}

    response = client.post("/v1/jobs", json=with_inputs(data, refs))

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["method"] == method.name and job["status"] == "queued"
    assert enqueued.calls == [{"job_id": job["id"], "queue": method.queue, "priority": 0, "method": method.name,
                               "settings": enqueued.calls[0]["settings"]}]
    listed = client.get("/v1/jobs", params={"method": method.name}).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]


# --- the broker message carries its time limits ---------------------------------------------


def test_every_message_carries_its_methods_time_limits(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    """Celery enforces the limits a message carries: expect each method's (soft, hard)."""
    import redis

    from shared.broker.client import enqueue_job

    url = redis_server.url.rsplit("/", 1)[0] + "/8"  # not database 0, which the farms consume
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    settings = Settings()
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        for method in METHODS:
            enqueue_job(f"job-{method.name}", method.queue, method=method.name, settings=settings)
            raw = next(m for name in queue_list_names(method.queue) if (m := client.lpop(name)) is not None)
            message = json.loads(raw)
            assert json.loads(base64.b64decode(message["body"]))[0] == [f"job-{method.name}"]
            assert message["headers"]["timelimit"] == [method.hard_limit_s, method.soft_limit_s], method.name
    finally:
        client.flushdb()


# --- the worker dispatches it ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_worker_task_runs_the_entry_point_under_the_soft_limit(
    method: Method, job_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a queued job, when the real task runs it (eagerly, in this process) with the
    method's engine function replaced by one that records its call and then hits Celery's
    soft time limit, expect the function called once with the parsed spec and the job failed
    with a time-limit problem quoting the method's soft limit."""
    import importlib

    from celery.exceptions import SoftTimeLimitExceeded

    from shared.jobs import store
    from worker.tasks import execute_job

    calls: list[Any] = []

    def engine(spec: Any, ctx: EngineContext) -> Any:
        calls.append(spec)
        raise SoftTimeLimitExceeded()

    module, _, function = method.entry_point.partition(":")
    monkeypatch.setattr(importlib.import_module(module), function, engine)
    if method.fanout is not None:  # a method that may fan out: its splitter keeps this job whole
        split_module, _, split_function = method.fanout.split.partition(":")
        monkeypatch.setattr(importlib.import_module(split_module), split_function, lambda spec, ctx: None)
    job, _ = store.create_job("default", minimal_spec(method))
    assert job.queue == method.queue

    assert execute_job.apply(args=[job.id], task_id="task-1").get() == "failed"

    assert len(calls) == 1 and isinstance(calls[0], method.spec)
    done = store.get_job(job.id)
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"].endswith("/time-limit-exceeded") and done.error["limit_s"] == method.soft_limit_s


# --- the CLI offers it ---------------------------------------------------------------------------


def _subparser(parser: Any, *words: str) -> Any:
    import argparse

    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_cli_offers_the_method_with_an_option_per_field(method: Method) -> None:
    from shared.cli import main as cli

    parser, options = cli.build_parser()
    words = cli.command_of(method)
    assert words[0] == ("train" if method.trains else "render")
    sub = _subparser(parser, *words)
    assert sub.get_default("method") == method.name
    assert {o.field for o in options[method.name]} == set(method.spec.model_fields) - {"method"}
