"""A run carried between short GPU leases: export --resumable, then train_adain goes on from it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from shared.engine.checkpoint import load_checkpoint
from shared.engine.context import EngineContext
from shared.engine.training import train_adain
from shared.jobs.specs import TrainAdainSpec

ROOT = Path(__file__).resolve().parents[2]


def test_a_resumable_export_continues_at_its_step(tiny_datasets, tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "deploy" / "train"))
    import export_adain_decoder

    content, style = tiny_datasets
    spec = TrainAdainSpec(name="carry", content_dataset=str(content), style_dataset=str(style), steps=2,
                          batch_size=2, image_size=32)
    # given two steps trained and exported as a small resumable checkpoint
    train_adain.run(spec, EngineContext(work_dir=tmp_path / "lease1"))
    carried = tmp_path / "carried.pt"
    export_adain_decoder.main(["--checkpoint", str(tmp_path / "lease1" / "checkpoint.pt"), "--out", str(carried),
                               "--resumable"])
    payload = load_checkpoint(carried, kind="adain-decoder")
    assert payload["training"]["step"] == 2 and "optimizer" not in payload["training"]
    assert payload["config"]["upsample"] == spec.upsample == "bilinear"
    # when the next lease starts from it and trains to 3 steps
    (tmp_path / "lease2").mkdir()
    shutil.copy(carried, tmp_path / "lease2" / "checkpoint.pt")
    result = train_adain.run(spec.model_copy(update={"steps": 3}), EngineContext(work_dir=tmp_path / "lease2"))
    # then it resumed at step 2, kept the history and finished one more step
    assert result.metrics["resumed_from"] == 2 and result.metrics["steps"] == 3
    history = load_checkpoint(tmp_path / "lease2" / "checkpoint.pt", kind="adain-decoder")["training"]["history"]
    assert history.shape == (3, len(train_adain.HISTORY_COLUMNS))
