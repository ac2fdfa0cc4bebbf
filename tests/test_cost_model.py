"""The cost model (``shared.jobs.cost``): every registered method has its own cost function,
costs grow with what makes a job slower, and the API returns the estimate with the job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shared.jobs import cost
from shared.jobs.methods import REGISTRY, estimate_cost, parse_spec

sys.path.insert(0, str(Path(__file__).parent / "api"))  # the API tests' helpers
from api_helpers import make_client, png_bytes, record_enqueues, upload_id

OPT = {"method": "optimize", "content": "c", "styles": [{"image": "s"}]}
REGIONS = [{"style": {"image": "s"}, "mask": "m"}] * 3


def gpu_s(**spec) -> float:
    return estimate_cost(parse_spec(spec)).gpu_seconds


def test_every_method_has_a_cost_function_of_its_own() -> None:
    assert all(m.cost is not cost.flat_cost for m in REGISTRY.values())


def test_vgg_flops_follow_the_architecture() -> None:
    # conv1_1: 3 -> 64 channels, 3x3, 2 FLOPs per multiply-add, a million pixels
    assert cost.vgg_conv_gflop_per_mp("relu1_1") == pytest.approx(2 * 3 * 64 * 9 * 1e6 / 1e9)
    depths = [cost.vgg_fraction([f"relu{b}_1"]) for b in range(1, 6)]
    assert depths == sorted(depths) and depths[-1] == 1.0


MASKED = {"method": "masked", "content": "c", "regions": REGIONS}
TRAIN_FAST = {"method": "train-fast", "name": "n", "styles": ["s"], "dataset": "d"}
TRAIN_ADAIN = {"method": "train-adain", "name": "n", "content_dataset": "c", "style_dataset": "s"}
ADAIN = {"method": "adain", "content": "c", "styles": [{"image": "s"}]}


@pytest.mark.parametrize(
    "cheap, dear",
    [
        ({**OPT, "size": 256}, {**OPT, "size": 512}),
        ({**OPT, "steps": 100}, {**OPT, "steps": 200}),
        ({**OPT, "optimizer": "adam"}, OPT),
        (OPT, {**OPT, "styles": [{"image": "s"}, {"image": "t"}]}),
        (OPT, {**OPT, "levels": 3}),
        ({**OPT, "style_layers": ["relu1_1", "relu2_1"], "content_layers": ["relu2_1"]}, OPT),
        (MASKED, {**MASKED, "mode": "composite"}),
        ({"method": "fast", "content": "c", "size": 256}, {"method": "fast", "content": "c", "size": 1024}),
        (ADAIN, {**ADAIN, "styles": [{"image": "s"}] * 3}),
        ({**TRAIN_FAST, "steps": 100}, {**TRAIN_FAST, "steps": 1000}),
        ({**TRAIN_ADAIN, "batch_size": 2}, {**TRAIN_ADAIN, "batch_size": 8}),
    ],
)
def test_cost_grows_with_the_work(cheap: dict, dear: dict) -> None:
    assert gpu_s(**cheap) < gpu_s(**dear)


def test_scale_of_the_estimates() -> None:
    default = gpu_s(**OPT)  # 512 px, 300 L-BFGS iterations
    huge = gpu_s(**OPT, size=2048, steps=5000)
    # 16x the pixels and 16.7x the iterations: about 260x the network work
    assert 200 < (huge - cost.JOB_OVERHEAD_S) / (default - cost.JOB_OVERHEAD_S) < 300
    assert gpu_s(method="fast", content="c") < 1.0 < default
    # training is linear in steps x batch
    one = gpu_s(method="train-adain", name="n", content_dataset="c", style_dataset="s", steps=1000)
    two = gpu_s(method="train-adain", name="n", content_dataset="c", style_dataset="s", steps=2000)
    assert two - cost.JOB_OVERHEAD_S == pytest.approx(2 * (one - cost.JOB_OVERHEAD_S), abs=0.002)  # rounded to ms


def test_run_time_depends_on_the_worker_class() -> None:
    spec = parse_spec(OPT)
    gpu, cpu = estimate_cost(spec, "gpu"), estimate_cost(spec, "cpu")
    assert gpu.gpu_seconds == cpu.gpu_seconds == gpu.seconds
    assert cpu.seconds == pytest.approx(gpu.seconds * cost.GPU_SPEEDUP / cost.CPU_WORKER_THREADS, rel=1e-3)


def test_api_returns_the_estimate_with_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings

    record_enqueues(monkeypatch)
    for client in make_client(Settings(home=tmp_path)):
        content, style = upload_id(client, png_bytes()), upload_id(client, png_bytes(20, 20, (0, 0, 200)))
        spec = {**OPT, "content": content, "styles": [{"image": style}]}
        accepted = client.post("/v1/jobs", json=spec)
        assert accepted.status_code == 202, accepted.text
        expected = estimate_cost(parse_spec(spec))
        assert accepted.json()["estimated_cost"] == {"gpu_seconds": expected.gpu_seconds, "seconds": expected.seconds,
                                                     "queue": "gpu"}
        read = client.get(f"/v1/jobs/{accepted.json()['id']}").json()
        assert read["estimated_cost"] == accepted.json()["estimated_cost"]
