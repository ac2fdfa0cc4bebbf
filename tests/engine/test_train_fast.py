"""Training an N-style CIN network: runs, checkpoints, resumes exactly, renders through fast.run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.engine.checkpoint import load_checkpoint
from shared.engine.context import EngineContext, Progress
from shared.engine.methods import fast
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.engine.training import train_fast
from shared.errors import InvalidSpec, JobCanceled
from shared.jobs.specs import FastSpec, TrainFastSpec


def _spec(tiny_datasets: tuple[Path, Path], steps: int) -> TrainFastSpec:
    content, style = tiny_datasets
    styles = sorted(str(p) for p in style.iterdir())[:2]
    return TrainFastSpec(
        name="tiny-cin", styles=styles, style_names=["first", "second"], dataset=str(content),
        steps=steps, batch_size=2, image_size=32, style_size=32, checkpoint_every=1, seed=3,
    )


def _train(spec: TrainFastSpec, work: Path) -> tuple[train_fast.TrainResult, list[Progress], list[Path]]:
    seen: list[Progress] = []
    saved: list[Path] = []
    ctx = EngineContext(work_dir=work, progress=seen.append, on_checkpoint=saved.append)
    return train_fast.run(spec, ctx), seen, saved


def _net(payload: dict) -> CINTransformer:
    net = CINTransformer(TransformerConfig.from_dict(payload["config"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two_steps(tiny_datasets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("cin-2")
    return (work, *_train(_spec(tiny_datasets, 2), work))


def test_two_steps_run_and_report(two_steps) -> None:
    # given a 2-style, 2-step run on 32 px crops
    work, result, seen, saved = two_steps
    # expect a progress report per step with the weighted loss terms
    assert [p.step for p in seen] == [1, 2] and all(p.total == 2 and p.stage == "train" for p in seen)
    for p in seen:
        assert set(p.losses) == {"content", "style", "tv"}
        assert p.loss == pytest.approx(sum(p.losses.values()), rel=1e-5)
    # a resumable checkpoint every step, announced to the caller
    assert saved == [work / "checkpoint.pt"] * 2
    # and a slim model checkpoint with the style names
    assert result.kind == "fast" and result.style_names == ["first", "second"]
    assert result.metrics["steps"] == 2 and result.metrics["resumed_from"] is None
    assert result.loss_curve_png is not None and result.loss_curve_png.startswith(b"\x89PNG")


def test_checkpoint_round_trips(two_steps) -> None:
    # given the training checkpoint and the final model checkpoint of the same run
    work, result, _, _ = two_steps
    training = load_checkpoint(work / "checkpoint.pt", kind="fast")
    final = load_checkpoint(result.checkpoint, kind="fast")
    # expect the full training state in one, a slim model in the other
    assert training["training"]["step"] == 2 and "optimizer" in training["training"]
    assert "optimizer" not in final["training"] and final["style_names"] == ["first", "second"]
    assert final["config"]["n_styles"] == 2
    # and the same network from both: same outputs
    x = torch.rand(1, 3, 32, 32)
    a, b = _net(training), _net(final)
    with torch.no_grad():
        for s in range(2):
            assert torch.equal(a(x, a.style_vector(s)), b(x, b.style_vector(s)))


def test_resume_continues_exactly(two_steps, tiny_datasets: tuple[Path, Path], tmp_path: Path) -> None:
    # given the 2-step checkpoint in a fresh work dir and a 4-step spec
    work2, _, _, _ = two_steps
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(work2 / "checkpoint.pt", resumed_dir / "checkpoint.pt")
    # when it runs, and an uninterrupted 4-step run runs beside it
    resumed, seen, _ = _train(_spec(tiny_datasets, 4), resumed_dir)
    straight, _, _ = _train(_spec(tiny_datasets, 4), tmp_path / "straight")
    # expect it to go on from step 2 (steps 3 and 4 only)
    assert [p.step for p in seen] == [3, 4]
    assert resumed.metrics["resumed_from"] == 2 and resumed.metrics["steps"] == 4
    state = load_checkpoint(resumed_dir / "checkpoint.pt", kind="fast")["training"]
    assert state["step"] == 4 and state["history"].shape == (4, 4)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {4.0}  # the restored Adam state kept counting
    # and end where the uninterrupted run ends (same data order, same optimizer state)
    a = load_checkpoint(resumed.checkpoint)["state_dict"]
    b = load_checkpoint(straight.checkpoint)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_trained_model_renders_through_fast_run(two_steps, tmp_path: Path, make_png) -> None:
    # given the trained model referenced by path (the default context resolves paths)
    _, result, _, _ = two_steps
    content = tmp_path / "c.png"
    content.write_bytes(make_png(50, 30, seed=4))
    # when fast.run renders each of its styles
    out = [fast.run(FastSpec(content=str(content), model=str(result.checkpoint), style=s, size=40), EngineContext())
           for s in range(2)]
    # expect images of the requested size, named styles, distinct per style
    assert all(r.image.size == (40, 24) for r in out)
    assert out[1].metrics["styles"] == {"second": 1.0} and out[1].metrics["n_styles"] == 2
    assert out[0].image.tobytes() != out[1].image.tobytes()
    # and an index it does not have is an invalid spec
    with pytest.raises(InvalidSpec, match="2 styles"):
        fast.run(FastSpec(content=str(content), model=str(result.checkpoint), style=2, size=40), EngineContext())


def test_cancel_stops_before_a_step(tiny_datasets: tuple[Path, Path], tmp_path: Path) -> None:
    ctx = EngineContext(work_dir=tmp_path, is_canceled=lambda: True)
    with pytest.raises(JobCanceled):
        train_fast.run(_spec(tiny_datasets, 2), ctx)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_stopped_between_checkpoints_saves_the_steps_it_completed(
    two_steps, tiny_datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    """A hand-back at a worker's graceful leave stops the run like a cancel: no step is lost."""
    # given a run that checkpoints only every 50 steps and is stopped once 2 steps are done
    spec = _spec(tiny_datasets, 4).model_copy(update={"checkpoint_every": 50})
    reported: list[Progress] = []
    saved: list[Path] = []
    ctx = EngineContext(work_dir=tmp_path, progress=reported.append, on_checkpoint=saved.append,
                        is_canceled=lambda: len(reported) >= 2)
    # when it runs, expect it to stop and to have checkpointed exactly those 2 steps
    with pytest.raises(JobCanceled):
        train_fast.run(spec, ctx)
    assert saved == [tmp_path / "checkpoint.pt"]
    state = load_checkpoint(tmp_path / "checkpoint.pt", kind="fast")
    assert state["training"]["step"] == 2 and state["training"]["history"].shape == (2, 4)
    # the same network as an uninterrupted 2-step run
    work2, _, _, _ = two_steps
    straight = load_checkpoint(work2 / "checkpoint.pt", kind="fast")["state_dict"]
    for k, v in state["state_dict"].items():
        assert torch.allclose(v, straight[k], atol=1e-6), k


def test_loss_curve_is_an_image(two_steps) -> None:
    import io

    _, result, _, _ = two_steps
    img = Image.open(io.BytesIO(result.loss_curve_png))
    assert img.size[0] >= 400 and img.size[1] >= 200
