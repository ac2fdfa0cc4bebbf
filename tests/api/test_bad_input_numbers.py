"""Bad input, numbers: every number in a job spec is finite and within its bounds.

NaN and +-Infinity (as JSON tokens, or a literal like 1e400 that overflows to infinity),
integers beyond what the engine can take, and weights far outside any sensible range are
refused with a 422 ``invalid-spec`` that names the field; nothing is stored or queued.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from shared.jobs.specs import MAX_LOSS_WEIGHT, MAX_SEED

from api_helpers import EnqueueRecorder, assert_nothing_queued, assert_problem, png_bytes, post_job_text, upload_id


@pytest.fixture
def refs(client: TestClient) -> dict[str, str]:
    """Real uploaded inputs, so that the number is the only thing wrong with each spec."""
    return {"content": upload_id(client), "style": upload_id(client, png_bytes(color=(9, 9, 9)))}


def _spec_text(method: str, refs: dict[str, str], field: str, token: str) -> str:
    """A spec of ``method`` as JSON text with ``"field": token`` spliced in verbatim."""
    base: dict = {"method": method, "content": refs["content"]}
    if method in ("optimize", "adain"):
        base["styles"] = [{"image": refs["style"]}]
    if method == "train-adain":
        base = {"method": method, "name": "m", "content_dataset": "prefix:a", "style_dataset": "prefix:b"}
    text = json.dumps(base)
    return text[:-1] + f', "{field}": {token}}}'


# (method, field, JSON token, what the problem says)
NON_FINITE = [
    ("optimize", "content_weight", "NaN", "finite number"),
    ("optimize", "style_weight", "Infinity", "finite number"),
    ("optimize", "tv_weight", "-Infinity", "finite number"),
    ("optimize", "style_scale", "1e400", "finite number"),  # overflows to inf when read
    ("fast", "strength", "NaN", "finite number"),
    ("fast", "mix", '{"0": NaN}', "finite number"),
    ("fast", "mix", '{"0": 1, "1": Infinity}', "finite number"),
    ("adain", "alpha", "-Infinity", "finite number"),
    ("train-adain", "lr_decay", "NaN", "finite number"),
]
OUT_OF_BOUNDS = [
    ("optimize", "seed", str(10**30), f"less than or equal to {MAX_SEED}"),
    ("optimize", "seed", "-1", "greater than or equal to 0"),
    ("optimize", "content_weight", "1e10", f"less than or equal to {MAX_LOSS_WEIGHT:.0f}"),
    ("fast", "mix", '{"0": 1e308, "1": 1e308}', "less than or equal to"),  # their sum would overflow
    ("fast", "style", "64", "less than or equal to 63"),
    ("fast", "mix", '{"64": 1}', "less than or equal to 63"),
    ("train-adain", "lr_decay", "2", "less than or equal to 1"),
    ("train-adain", "checkpoint_every", str(10**12), "less than or equal to"),
    ("train-adain", "seed", str(2**64), "less than or equal to"),
]


@pytest.mark.parametrize(("method", "field", "token", "message"), NON_FINITE + OUT_OF_BOUNDS)
def test_given_non_finite_or_unbounded_number_expect_422_naming_field_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder, refs: dict[str, str], method: str, field: str, token: str,
    message: str,
) -> None:
    # when a spec carries the number
    response = post_job_text(client, _spec_text(method, refs, field, token))
    # then 422 invalid-spec names the field and why, and nothing is stored or queued
    body = assert_problem(response, 422, "invalid-spec")
    assert field in body["detail"] and message in body["detail"], body["detail"]
    assert_nothing_queued(enqueued)


def test_given_integer_too_long_to_read_expect_422_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder, refs: dict[str, str]
) -> None:
    # when the seed has 5000 digits (more than Python reads from JSON text)
    response = post_job_text(client, _spec_text("optimize", refs, "seed", "9" * 5000))
    # then a 422 says so, never a 500
    assert "too long" in assert_problem(response, 422, "invalid-spec")["detail"]
    assert_nothing_queued(enqueued)


def test_given_numbers_on_their_bounds_expect_accepted(client: TestClient, refs: dict[str, str]) -> None:
    # given the largest seed, loss weight and style index the spec allows
    spec = {"method": "optimize", "content": refs["content"], "styles": [{"image": refs["style"]}],
            "seed": MAX_SEED, "content_weight": MAX_LOSS_WEIGHT, "style_weight": 0, "tv_weight": 0}
    # expect them accepted, and stored exactly
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["seed"] == MAX_SEED
    fast = {"method": "fast", "content": refs["content"], "mix": {"0": 1e-300, "63": MAX_LOSS_WEIGHT}}
    assert client.post("/v1/jobs", json=fast).status_code == 202
