"""shared.jobs.outcomes: the typed worker -> API contract in ``jobs.result``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from shared.jobs.outcomes import RenderKeys, RenderOutcome, TrainKeys, TrainOutcome, parse_outcome

RENDER = RenderOutcome(
    keys=RenderKeys(image="tenants/t/jobs/j/output.png"), width=64, height=48, size_bytes=1234, metrics={"steps": 3}
)
TRAIN = TrainOutcome(
    keys=TrainKeys(model="tenants/t/models/m/model.pt", checkpoint="tenants/t/jobs/j/checkpoint.pt"),
    model_id="m",
    model_name="mine",
    model_kind="adain-decoder",
    style_names=["a"],
)


@pytest.mark.parametrize("outcome", [RENDER, TRAIN], ids=["render", "train"])
def test_given_outcome_when_stored_as_json_and_parsed_expect_the_same_outcome(
    outcome: RenderOutcome | TrainOutcome,
) -> None:
    row = json.loads(json.dumps(outcome.model_dump(mode="json")))
    assert row["kind"] == outcome.kind
    assert parse_outcome(row) == outcome


def test_given_render_row_from_before_kinds_expect_render_outcome() -> None:
    # given the shape the worker wrote before outcomes had a kind
    row = {
        "keys": {"image": "tenants/t/jobs/j/output.png"},
        "width": 64,
        "height": 48,
        "bytes": 1234,
        "content_type": "image/png",
        "metrics": {"steps": 3},
        "seconds": 2.5,
        "worker": "w1",
    }
    # when parsed, expect the same facts in today's model
    assert parse_outcome(row) == RENDER.model_copy(update={"seconds": 2.5, "worker": "w1"})


@pytest.mark.parametrize("curve_keys", [{}, {"image": "loss-key", "loss_curve": "loss-key"}])
def test_given_training_row_from_before_kinds_expect_train_outcome(curve_keys: dict[str, str]) -> None:
    # given a training row of before: ``kind`` was the model kind, the curve also keys.image
    row = {
        "keys": {"model": "tenants/t/models/m/model.pt", "checkpoint": "tenants/t/jobs/j/checkpoint.pt", **curve_keys},
        "model_id": "m",
        "model_name": "mine",
        "kind": "adain-decoder",
        "style_names": ["a"],
        "metrics": {},
        "seconds": 9.0,
        "worker": "w1",
    }
    outcome = parse_outcome(row)
    # expect a training outcome whose model kind and loss curve survived the rename
    assert isinstance(outcome, TrainOutcome)
    assert outcome.model_kind == "adain-decoder" and outcome.model_id == "m" and outcome.seconds == 9.0
    assert outcome.image_key == curve_keys.get("loss_curve")


def test_given_metrics_that_json_cannot_hold_expect_plain_json() -> None:
    # given metrics as an engine returns them: numpy scalars, NaN, inf, nested dicts
    metrics = {
        "loss": np.float32(0.5),
        "nan": float("nan"),
        "inf": float("inf"),
        "steps": np.int64(7),
        "nested": {"x": float("-inf"), "ok": 1},
        "history": [1.0, "a", None, object],
    }
    outcome = RenderOutcome(keys=RenderKeys(image="k"), width=1, height=1, size_bytes=1, metrics=metrics)
    # expect strict JSON (no NaN) with the numbers kept
    row = json.loads(json.dumps(outcome.model_dump(mode="json"), allow_nan=False))
    assert row["metrics"]["loss"] == 0.5 and row["metrics"]["steps"] == 7.0
    assert row["metrics"]["nan"] is None and row["metrics"]["inf"] is None
    assert row["metrics"]["nested"] == {"x": None, "ok": 1}
    assert row["metrics"]["history"][:3] == [1.0, "a", None] and isinstance(row["metrics"]["history"][3], str)


@pytest.mark.parametrize(
    "row",
    [{"keys": {}}, {"kind": "render", "keys": {"image": "k"}}, {"kind": "train", "model_id": "m"}],
    ids=["no-image", "render-without-size", "train-without-keys"],
)
def test_given_row_of_neither_shape_expect_validation_error(row: dict) -> None:
    with pytest.raises(ValidationError):
        parse_outcome(row)
