"""Graceful leave in the pool process: the flag the main process sets reaches a forked child,
and a running job finishes only when it ends within the grace period."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.engine.context import Progress
from shared.settings import Settings
from shared.storage import LocalStorage, checkpoint_key
from worker import leave
from worker.job_runtime import JobRuntime


@pytest.fixture(autouse=True)
def _staying() -> Iterator[None]:
    leave.reset()
    yield
    leave.reset()


def _runtime(tmp_path: Path, grace_s: float) -> JobRuntime:
    settings = Settings(home=tmp_path / "home", shutdown_grace_s=grace_s, checkpoint_upload_interval_s=3600)
    return JobRuntime(job_id="j1", tenant="default", settings=settings, storage=LocalStorage(tmp_path / "blobs"))


def _steps(rt: JobRuntime, clock: dict[str, float], steps: range, total: int, seconds_per_step: float) -> None:
    for step in steps:
        clock["t"] += seconds_per_step
        rt.progress(Progress(step=step, total=total))


def test_given_a_leave_announced_after_the_fork_expect_the_child_sees_it() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the pool process: wait for the parent's announcement, report what it saw
        os.close(read)
        deadline = time.monotonic() + 10
        while not leave.leaving() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(write, repr(leave.since()).encode())
        os._exit(0)
    os.close(write)
    leave.announce(at=1234.5)
    seen = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert seen == "1234.5"


@pytest.mark.parametrize(
    ("seconds_per_step", "expect_hand_back"),
    [(0.1, False), (2.0, True)],  # 50 steps left: 5 s (within 30 s of grace) or 100 s (not)
    ids=["ends-within-grace", "would-overrun"],
)
def test_given_a_leave_when_the_job_would_or_would_not_end_in_the_grace_period_expect_finish_or_hand_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds_per_step: float, expect_hand_back: bool
) -> None:
    # given a job halfway through at a steady rate
    rt = _runtime(tmp_path, grace_s=30)
    clock = {"t": 100.0}
    monkeypatch.setattr("worker.job_runtime.time.monotonic", lambda: clock["t"])
    _steps(rt, clock, range(1, 51), total=100, seconds_per_step=seconds_per_step)
    assert rt.is_canceled() is False
    # when the worker starts to leave
    leave.announce()
    # then the job goes on when it ends within the grace period, else it is handed back
    assert rt.is_canceled() is expect_hand_back
    assert rt.handing_back is expect_hand_back


def test_given_a_leave_when_the_grace_period_is_over_expect_hand_back(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, grace_s=30)
    rt.progress(Progress(step=1, total=2))
    rt.progress(Progress(step=1, total=2))
    leave.announce(at=time.time() - 31)
    assert rt.should_hand_back() is True


def test_given_a_leave_when_handing_back_a_training_job_expect_its_newest_checkpoint_uploaded(tmp_path: Path) -> None:
    # given a training job whose last checkpoints the upload throttle held back
    rt = _runtime(tmp_path, grace_s=0)
    ckpt = tmp_path / "checkpoint.pt"
    for step in (10, 20, 30):
        ckpt.write_bytes(f"step-{step}".encode())
        rt.on_checkpoint(ckpt)
    key = checkpoint_key("default", "j1")
    assert rt.storage.get_bytes(key) == b"step-10"
    # when the worker leaves
    leave.announce()
    # then the job stops and the newest checkpoint is what the next worker resumes from
    assert rt.is_canceled() is True and rt.handing_back is True
    assert rt.storage.get_bytes(key) == b"step-30"
