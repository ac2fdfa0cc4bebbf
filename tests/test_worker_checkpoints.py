"""worker.job_runtime: training checkpoints are uploaded at once, then at most once per interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from shared.storage import LocalStorage, checkpoint_key
from worker.job_runtime import JobRuntime


def _runtime(tmp_path: Path, interval: float) -> tuple[JobRuntime, LocalStorage]:
    storage = LocalStorage(tmp_path / "blobs")
    settings = Settings(home=tmp_path / "home", checkpoint_upload_interval_s=interval)
    return JobRuntime(job_id="j1", tenant="default", settings=settings, storage=storage), storage


def test_checkpoints_are_uploaded_at_once_then_throttled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a runtime that uploads at most every 60 s, and a clock we control
    rt, storage = _runtime(tmp_path, 60.0)
    now = {"t": 1000.0}
    monkeypatch.setattr("worker.job_runtime.time.monotonic", lambda: now["t"])
    ckpt = tmp_path / "checkpoint.pt"
    key = checkpoint_key("default", "j1")

    def checkpoint(content: bytes, at: float) -> None:
        now["t"] = at
        ckpt.write_bytes(content)
        rt.on_checkpoint(ckpt)

    # when the engine checkpoints at t=0 s, 10 s, 59 s and 61 s
    checkpoint(b"step-100", 1000.0)
    # then the first one is uploaded at once
    assert storage.get_bytes(key) == b"step-100"
    checkpoint(b"step-200", 1010.0)
    checkpoint(b"step-300", 1059.0)
    # and the next ones only once the interval has passed
    assert storage.get_bytes(key) == b"step-100"
    checkpoint(b"step-400", 1061.0)
    assert storage.get_bytes(key) == b"step-400"


def test_zero_interval_uploads_every_checkpoint(tmp_path: Path) -> None:
    rt, storage = _runtime(tmp_path, 0.0)
    ckpt = tmp_path / "checkpoint.pt"
    for i in range(3):
        ckpt.write_bytes(f"step-{i}".encode())
        rt.on_checkpoint(ckpt)
        assert storage.get_bytes(checkpoint_key("default", "j1")) == f"step-{i}".encode()
