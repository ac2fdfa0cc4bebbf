"""A training run's state across steps and restarts, and the wrap-up both trainers share.

Each trainer owns its network, losses and loop; around the loop they do the same
bookkeeping, which lives here:

- ``resumable_checkpoint`` / ``restore``: a work dir holding ``checkpoint.pt`` continues from
  it (network, Adam state, the RNG states of the data order and of torch, loss history,
  training time so far), so a resumed run ends where an uninterrupted one would;
- ``TrainingRun.record`` / ``save``: per-step loss rows folded into the history, and that
  resumable checkpoint written atomically (every ``checkpoint_every`` steps, at the end,
  when ``ctx.max_seconds`` stops the run early, and when the job is stopped between steps:
  a worker's graceful leave hands a training job back without losing a step);
- ``TrainingRun.finish``: the run's metrics, the slim final checkpoint ``work_dir/<name>.pt``
  (no optimizer state) and the ``TrainResult`` with its loss curve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared.engine.checkpoint import save_checkpoint
from shared.engine.context import EngineContext
from shared.engine.device import inference_dtype, pick_device
from shared.engine.results import TrainResult
from shared.engine.training.plots import loss_curve_png
from shared.errors import JobCanceled

CHECKPOINT_NAME = "checkpoint.pt"


def training_device(ctx: EngineContext) -> tuple[torch.device, torch.dtype]:
    """The device a run trains on and the dtype its forward passes autocast to."""
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # no native fp16 on CPUs
    return device, dtype


def resumable_checkpoint(ctx: EngineContext) -> Path:
    """``work_dir/checkpoint.pt`` (the work dir is created): a run continues from it when it exists."""
    work_dir = Path(ctx.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir / CHECKPOINT_NAME


@dataclass(frozen=True)
class Resumed:
    """Where a restored run stands: its step, loss history (step, K) and training seconds so far."""

    step: int
    history: torch.Tensor | None
    seconds: float


def restore(
    payload: dict[str, Any], net: torch.nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator
) -> Resumed:
    """Load a resumable checkpoint into ``net``, ``optimizer`` and the data generator ``gen``
    (and torch's RNG); what the checkpoint lacks keeps its fresh state."""
    training = payload.get("training") or {}
    net.load_state_dict(payload["state_dict"])
    if "optimizer" in training:
        optimizer.load_state_dict(training["optimizer"])
    step = int(training.get("step", 0))
    if "data_rng" in training:
        gen.set_state(training["data_rng"])
    if "torch_rng" in training:
        torch.set_rng_state(training["torch_rng"])
    history = training["history"].float()[:step] if "history" in training else None
    return Resumed(step, history, float(training.get("seconds", 0.0)))


def training_meta(
    spec: Any, paper: str, device: torch.device, dtype: torch.dtype, seconds: float, **extra: Any
) -> dict[str, Any]:
    """The ``meta`` of a training checkpoint: the paper, the spec, where and how long it trained."""
    return {
        "paper": paper,
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        **extra,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "train_seconds": round(seconds, 1),
    }


@dataclass
class TrainingRun:
    """A set-up training run: what every checkpoint holds, and the state between steps.

    ``columns`` names the loss history's columns, the total first and then the weighted
    terms that ``record`` gets for each step. ``meta_extra`` goes into every checkpoint's meta.
    """

    spec: Any  # TrainFastSpec | TrainAdainSpec
    ctx: EngineContext
    kind: str
    paper: str
    device: torch.device
    dtype: torch.dtype
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    columns: tuple[str, ...]
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    style_names: list[str] | None = None
    meta_extra: dict[str, Any] = field(default_factory=dict)
    resumed: Resumed | None = None

    def __post_init__(self) -> None:
        fresh = torch.zeros(0, len(self.columns))
        self.step = self.resumed.step if self.resumed else 0
        self.saved_step = self.step  # the step of the newest checkpoint in the work dir
        #: called first by ``save``: a trainer that holds losses back (on the device) records them
        self.flush: Callable[[], None] | None = None
        self.history = self.resumed.history if self.resumed and self.resumed.history is not None else fresh  # (N, K)
        self.seconds_before = self.resumed.seconds if self.resumed else 0.0
        self.resumed_from = self.resumed.step if self.resumed else None
        self.rows: list[torch.Tensor] = []  # (1, K) per step not yet in ``history``
        self.started = time.perf_counter()

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.ctx.work_dir) / CHECKPOINT_NAME

    def elapsed(self) -> float:
        """Training seconds of the whole run, earlier stretches included."""
        return self.seconds_before + time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        """True once this call has trained ``ctx.max_seconds`` (a time-boxed stretch is over)."""
        limit = self.ctx.max_seconds
        return limit is not None and time.perf_counter() - self.started >= limit

    def next_step(self) -> bool:
        """Asked before each step: False once every step ran or the time box is over;
        ``JobCanceled`` when the job was canceled."""
        if self.step >= self.spec.steps:
            return False
        self.ctx.check_cancel()
        return not self.out_of_time()

    @contextmanager
    def saved_when_stopped(self) -> Iterator[None]:
        """Around the training loop: a run stopped at any cancel point (canceled, handed back at
        a worker's graceful leave, its lease lost) checkpoints the steps it completed since the
        last save before it stops; the worker uploads that only while its claim holds. A step
        cut in its forward or backward pass never reached ``optimizer.step``, so the saved
        network and optimizer are those of ``step`` whole steps."""
        try:
            yield
        except JobCanceled:
            if self.step > self.saved_step:
                self.save()
            raise

    def record(self, terms: list[float]) -> float:
        """Keep one step's weighted loss terms; returns their total."""
        total = sum(terms)
        self.rows.append(torch.tensor([[total, *terms]]))  # (1, K)
        return total

    def save(self) -> None:
        """Fold the recorded steps into the history and write ``work_dir/checkpoint.pt``."""
        if self.flush is not None:
            self.flush()
        if self.rows:
            self.history = torch.cat([self.history, *self.rows])  # (N, K)
            self.rows.clear()
        seconds = self.elapsed()
        save_checkpoint(
            self.checkpoint_path,
            kind=self.kind,
            config=self.config,
            state_dict=self.net.state_dict(),
            style_names=self.style_names,
            preprocessing=self.preprocessing,
            training={
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "history": self.history.clone(),
                "history_columns": list(self.columns),
                "data_rng": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "seconds": seconds,
            },
            meta=self._meta(seconds),
        )
        self.saved_step = self.step
        self.ctx.on_checkpoint(self.checkpoint_path)

    def finish(self, curve_title: str, **metrics_extra: Any) -> TrainResult:
        """Checkpoint what is not yet saved, write the slim final checkpoint, return the result.

        A run stopped early (``max_seconds``) still has unsaved steps, and one resumed at or
        past its last step has no checkpoint in this work dir yet: both get one here.
        """
        if self.rows or not self.checkpoint_path.is_file():
            self.save()
        seconds = self.elapsed()
        history = self.history
        tail = history[-max(1, min(100, len(history) // 10)) :] if len(history) else torch.zeros(1, len(self.columns))
        metrics: dict[str, Any] = {
            "steps": self.step,
            "resumed_from": self.resumed_from,
            "first_loss": float(history[0, 0]) if len(history) else None,
            "final_loss": float(tail[:, 0].mean()),
            **{f"final_{name}_loss": float(tail[:, i].mean()) for i, name in enumerate(self.columns) if i > 0},
            "train_seconds": round(seconds, 1),
            **metrics_extra,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }
        final = save_checkpoint(
            Path(self.ctx.work_dir) / f"{self.spec.name}.pt",
            kind=self.kind,
            config=self.config,
            state_dict=self.net.state_dict(),
            style_names=self.style_names,
            preprocessing=self.preprocessing,
            training={"step": self.step, "history": history.clone(), "history_columns": list(self.columns),
                      "metrics": metrics},
            meta=self._meta(seconds),
        )
        return TrainResult(
            checkpoint=final,
            kind=self.kind,
            style_names=list(self.style_names or []),
            metrics=metrics,
            loss_curve_png=loss_curve_png(history[:, :3], curve_title),
        )

    def _meta(self, seconds: float) -> dict[str, Any]:
        return training_meta(self.spec, self.paper, self.device, self.dtype, seconds, **self.meta_extra)
