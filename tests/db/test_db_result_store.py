"""worker.result_store: engine results stored in blob storage and described as typed outcomes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.checksums import sha256_file
from shared.engine.checkpoint import save_checkpoint
from shared.engine.results import RenderResult, TrainResult
from shared.errors import Conflict, EngineError
from shared.jobs import model_registry, store
from shared.jobs.methods import parse_spec
from shared.jobs.outcomes import RenderOutcome, TrainOutcome, parse_outcome
from shared.settings import Settings
from shared.storage import LOSS_CURVE_NAME, RENDER_NAME, LocalStorage, result_key
from worker.job_runtime import JobRuntime
from worker.result_store import check_model_name_free, store_result

SPEC = {"method": "train-fast", "name": "mine", "styles": ["a" * 64], "dataset": "b" * 64}


def _runtime(tmp_path: Path, job_id: str) -> tuple[JobRuntime, LocalStorage]:
    storage = LocalStorage(tmp_path / "blobs")
    return JobRuntime(job_id=job_id, tenant="t1", settings=Settings(home=tmp_path / "home"), storage=storage), storage


def _checkpoint(path: Path) -> Path:
    return save_checkpoint(
        path, kind="fast", config={"width": 8}, state_dict={"w": torch.ones(2, 2)}, style_names=["a", "b"]
    )


def test_given_render_result_expect_png_stored_and_render_outcome(tmp_path: Path) -> None:
    # given an engine result of 7 x 5 px
    rt, storage = _runtime(tmp_path, "job-1")
    image = Image.new("RGB", (7, 5), (10, 200, 30))
    # when stored
    spec = parse_spec({"method": "fast", "content": "a" * 64})
    outcome = store_result(rt, spec, RenderResult(image=image, metrics={"loss": float("nan"), "steps": 3}))
    # expect the PNG at the render key and an outcome that describes it
    assert isinstance(outcome, RenderOutcome)
    assert outcome.image_key == result_key("t1", "job-1", RENDER_NAME)
    png = storage.get_bytes(outcome.image_key)
    assert Image.open(io.BytesIO(png)).size == (7, 5) == (outcome.width, outcome.height)
    assert outcome.size_bytes == len(png) and outcome.metrics == {"loss": None, "steps": 3}


def test_given_training_result_when_stored_twice_expect_one_registered_model(tmp_path: Path, db_url: str) -> None:
    # given a running training job and the checkpoint and loss curve it produced
    job, _ = store.create_job("t1", SPEC)
    rt, storage = _runtime(tmp_path, job.id)
    ckpt = _checkpoint(tmp_path / "final.pt")
    result = TrainResult(checkpoint=ckpt, kind="fast", style_names=["a", "b"], loss_curve_png=b"curve")
    spec = parse_spec(store.get_job(job.id).spec)

    # when it is stored, and stored again by a retry of the same job
    first = store_result(rt, spec, result)
    again = store_result(rt, spec, result)

    # expect the same model, registered once, its file in storage, the curve as the image
    assert isinstance(first, TrainOutcome) and again == first
    model = model_registry.get_model("mine", "t1")
    assert model.id == first.model_id and model.checksum == sha256_file(ckpt)
    assert model.style_names == ["a", "b"] and model.created_by_job == job.id
    assert storage.get_bytes(first.keys.model) == ckpt.read_bytes()
    assert first.image_key == result_key("t1", job.id, LOSS_CURVE_NAME)
    assert storage.get_bytes(first.image_key) == b"curve"
    assert first.model_kind == "fast" and first.model_name == "mine"
    assert parse_outcome(first.model_dump(mode="json")) == first


def test_given_model_name_of_another_job_expect_conflict_at_start(tmp_path: Path, db_url: str) -> None:
    # given a model "mine" registered by job A
    model_registry.register_model(
        name="mine", kind="fast", checksum="c" * 64, storage_key="k", tenant="t1", created_by_job="job-a"
    )
    # when job B starts training under that name, expect a conflict; job A may go on
    with pytest.raises(Conflict):
        check_model_name_free("t1", "mine", "job-b")
    check_model_name_free("t1", "mine", "job-a")
    check_model_name_free("t1", "free-name", "job-b")


def test_given_render_spec_with_training_result_expect_engine_error(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path, "job-1")
    spec = parse_spec({"method": "fast", "content": "a" * 64})
    with pytest.raises(EngineError):
        store_result(rt, spec, TrainResult(checkpoint=tmp_path / "x.pt", kind="fast"))
