"""What the engine needs from its caller, and nothing more.

The engine is pure: it never talks to Redis, S3 or SQL. The worker and the CLI each build
an ``EngineContext`` that reads inputs, resolves models, receives progress and answers the
cancel question. Every method module has one entry point taking ``(spec, ctx)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.errors import JobCanceled

if TYPE_CHECKING:
    from PIL import Image

#: Longest side of a preview image, in pixels.
PREVIEW_MAX_SIDE = 256


@dataclass(frozen=True)
class Progress:
    """One progress report. ``step`` counts from 1 to ``total`` over the whole job."""

    step: int
    total: int
    loss: float | None = None
    stage: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    #: The work so far (at most ``PREVIEW_MAX_SIDE`` px), on the steps ``EngineContext.wants_preview`` picks.
    preview: Image.Image | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.step / self.total))


class ProgressCallback(Protocol):
    def __call__(self, progress: Progress) -> None: ...


def _read_file(ref: str) -> bytes:
    return Path(ref).expanduser().read_bytes()


def _model_path(ref: str) -> Path:
    return Path(ref).expanduser()


def _dataset_dir(ref: str) -> Path:
    return Path(ref).expanduser()


def _no_shared(name: str) -> bytes:
    raise KeyError(f"no shared blob {name!r}: this job is not a piece of a fanned-out job")


@dataclass
class EngineContext:
    """Callbacks and choices of one job run.

    - ``read_input(ref) -> bytes``: the bytes of an image reference in the spec.
    - ``resolve_model(ref) -> Path``: a local checkpoint file for a model id/name/path.
      Built-in names (``multistyle26``, ``adain-default``) are resolved by the engine itself
      before this is asked.
    - ``dataset_dir(ref) -> Path``: a local flat folder of images for a dataset reference.
    - ``progress(Progress)``: called often; the caller throttles its own writes.
    - ``is_canceled() -> bool``: checked between steps, and while ``run_engine`` runs a job
      also between the layers of its networks (``cancel_point``), forward and backward, so
      one long step (an L-BFGS iteration at 2048 px) does not delay a cancel; the engine
      then raises ``JobCanceled``. Called often: the caller throttles its own polling.
    - ``work_dir``: scratch folder of this job (training writes checkpoints here).
    - ``on_checkpoint(path)``: called after a training checkpoint is written (the worker
      uploads it so a retried job can resume).
    - ``preview_every``: fraction of a job's steps between preview images in ``Progress``
      (0.1 = one every 10 % of the steps; 0 = none). Only the optimization methods make them.
    - ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; ``precision``: ``auto`` | ``fp32`` |
      ``bf16`` | ``fp16``.
    - ``read_shared(name) -> bytes``: a blob the job's splitter computed once for every piece
      of a fanned-out job (``shared.engine.fanout``); only pieces and assemblers have any.
    - ``max_seconds`` (training): stop cleanly after this much training in this call, with a
      checkpoint and a result as if the last step were reached; the same spec and work dir
      go on from there (``stylefarm train --max-minutes``: time-boxed stretches).
    """

    read_input: Callable[[str], bytes] = _read_file
    resolve_model: Callable[[str], Path] = _model_path
    dataset_dir: Callable[[str], Path] = _dataset_dir
    progress: Callable[[Progress], None] = lambda p: None
    is_canceled: Callable[[], bool] = lambda: False
    work_dir: Path = field(default_factory=lambda: Path("."))
    on_checkpoint: Callable[[Path], None] = lambda p: None
    preview_every: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    max_seconds: float | None = None
    read_shared: Callable[[str], bytes] = _no_shared

    def check_cancel(self) -> None:
        if self.is_canceled():
            raise JobCanceled("the job was canceled")

    def wants_preview(self, step: int, total: int) -> bool:
        """Whether ``step`` of ``total`` should carry a preview: every ``preview_every`` of the
        steps, never the last one (the result itself follows)."""
        if self.preview_every <= 0 or total <= 1 or step >= total:
            return False
        every = max(1, round(total * self.preview_every))
        return step % every == 0

    def report(self, step: int, total: int, loss: float | None = None, stage: str = "",
               preview: Image.Image | None = None, **losses: float) -> None:
        self.progress(Progress(step=step, total=total, loss=loss, stage=stage, losses=dict(losses), preview=preview))


# --- cancel points inside the networks -----------------------------------------------------

_cancel_check: ContextVar[Callable[[], None] | None] = ContextVar("stylefarm_cancel_check", default=None)


@contextmanager
def cancel_checks(ctx: EngineContext) -> Iterator[None]:
    """While the block runs, ``cancel_point()`` checks ``ctx``'s cancel flag (and whatever
    else its ``is_canceled`` checks, such as the worker's time limit)."""
    token = _cancel_check.set(ctx.check_cancel)
    try:
        yield
    finally:
        _cancel_check.reset(token)


def current_cancel_check() -> Callable[[], None] | None:
    """The check of the job running in this context (None outside ``cancel_checks``); a
    network captures it for its backward pass, which may run on another thread."""
    return _cancel_check.get()


def cancel_point() -> None:
    """Between two layers: raise ``JobCanceled`` if the running job was canceled (no-op outside a job)."""
    check = _cancel_check.get()
    if check is not None:
        check()
