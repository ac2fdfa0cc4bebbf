"""Bad input, unbounded lists and strings: every list and string in a job spec has a bound.

A list far over its bound (one million layer names) is refused by size before it is read
(413); one just over it by the spec (422 ``invalid-spec`` naming the field). Either way
nothing is stored or queued, so no job row can hold megabytes that every read returns.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from shared.jobs.specs import MAX_FAST_STYLES, MAX_STYLES, VGG_LAYERS

from api_helpers import EnqueueRecorder, assert_nothing_queued, assert_problem, post_job_text, upload_id


@pytest.fixture
def content(client: TestClient) -> str:
    return upload_id(client)


def _optimize(content: str, **extra: object) -> dict:
    return {"method": "optimize", "content": content, "styles": [{"image": content}], **extra}


def test_given_million_content_layers_expect_413_quickly_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder, content: str
) -> None:
    # given a spec with one million content_layers (an 11 MB body)
    body = json.dumps(_optimize(content, content_layers=["relu4_2"] * 1_000_000))
    # when it is submitted
    started = time.monotonic()
    response = post_job_text(client, body)
    # then 413 before the body is parsed, fast, and nothing is stored or queued
    assert "262144 bytes" in assert_problem(response, 413, "payload-too-large")["detail"]
    assert time.monotonic() - started < 5
    assert_nothing_queued(enqueued)


def _too_many(content: str) -> list[tuple[dict, str, str]]:
    """(spec, field, message) for each list or string one step past its bound."""
    names = [f"s{i}" for i in range(MAX_FAST_STYLES + 1)]
    return [
        (_optimize(content, content_layers=[*list(VGG_LAYERS), "relu1_1"]), "content_layers", "at most 16"),
        (_optimize(content, style_layers=["relu1_1", "relu2_1", "relu1_1"]), "style_layers", "named once"),
        (_optimize(content, style_layers=[]), "style_layers", "at least 1"),
        (_optimize(content, styles=[{"image": content}] * (MAX_STYLES + 1)), "styles", f"at most {MAX_STYLES}"),
        ({"method": "adain", "content": content, "styles": [{"image": content}],
          "masks": [content] * (MAX_STYLES + 1)}, "masks", f"at most {MAX_STYLES}"),
        ({"method": "fast", "content": content, "mix": {str(i): 1 for i in range(MAX_FAST_STYLES)} | {"-1": 1}},
         "mix", "greater than or equal to 0"),
        ({"method": "train-fast", "name": "m", "styles": [content], "dataset": "prefix:d",
          "style_names": names[:1], "content_layers": ["relu3_3", "relu3_3"]}, "content_layers", "named once"),
        ({"method": "train-fast", "name": "m", "styles": [content] * 2, "dataset": "prefix:d",
          "style_names": ["a", "b" * 101]}, "style_names", "at most 100"),
        ({"method": "train-fast", "name": "m", "styles": [content], "dataset": "prefix:d",
          "style_names": names}, "style_names", f"at most {MAX_FAST_STYLES}"),
        ({"method": "fast", "content": content, "model": "m" * 1025}, "model", "at most 1024"),
        ({"method": "fast", "content": "c" * 1025}, "content", "at most 1024"),
        ({"method": "train-adain", "name": "m", "content_dataset": "prefix:a", "style_dataset": "prefix:b",
          "init_from": "x" * 1025}, "init_from", "at most 1024"),
    ]


def test_given_lists_and_strings_past_their_bounds_expect_422_naming_field_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder, content: str
) -> None:
    for spec, field, message in _too_many(content):
        # when a spec has a list or string one step past its bound
        body = assert_problem(client.post("/v1/jobs", json=spec), 422, "invalid-spec")
        # then the problem names the field and the bound
        assert field in body["detail"] and message in body["detail"], (field, body["detail"])
    # and nothing is stored or queued
    assert_nothing_queued(enqueued)


def test_given_every_vgg_layer_once_expect_accepted(client: TestClient, content: str) -> None:
    # given the longest list the spec allows: all 16 layers, each once
    spec = _optimize(content, content_layers=list(VGG_LAYERS), style_layers=list(VGG_LAYERS))
    response = client.post("/v1/jobs", json=spec)
    # expect it accepted
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["content_layers"] == list(VGG_LAYERS)
