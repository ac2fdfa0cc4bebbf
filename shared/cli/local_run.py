"""Run one job spec in this process: no servers, a tqdm progress bar, Ctrl-C cancels. A
render above the tile size is rendered tile by tile as a farm would (``_run_tiled``).

The first Ctrl-C sets the cancel flag the engine checks between steps (it then raises
``JobCanceled`` and the job stops cleanly); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared.engine.context import EngineContext, Progress
from shared.errors import InvalidImage
from shared.jobs.methods import get_method


class ProgressBar:
    """Adapts engine ``Progress`` reports to one tqdm bar (step/total, loss, stage)."""

    def __init__(self, enabled: bool = True, unit: str = "step") -> None:
        self.enabled = enabled
        self.unit = unit
        self._bar: Any = None  # a tqdm bar, made on the first report (tqdm has no type information)
        self._stage: str | None = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=p.total, unit=self.unit, dynamic_ncols=True, leave=True)
        bar = self._bar
        if bar.total != p.total:
            bar.total = p.total
            bar.refresh()
        if p.stage != self._stage:
            self._stage = p.stage
            bar.set_description_str(p.stage, refresh=False)
        postfix = []
        if p.loss is not None:
            postfix.append(f"loss={p.loss:.4g}")
        postfix += [f"{k}={v:.3g}" for k, v in list(p.losses.items())[:4]]
        bar.set_postfix_str(" ".join(postfix), refresh=False)
        bar.update(max(0, p.step - bar.n))  # tqdm throttles the redraws itself

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        else:
            import sys

            print(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def cancel_on_sigint(on_first: Callable[[], None] = lambda: None) -> Iterator[threading.Event]:
    """Yields an Event set by the first Ctrl-C; the second one raises KeyboardInterrupt."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        on_first()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def check_local_refs(spec: Any) -> None:
    """Every file a spec names must exist (an early, clear error instead of a traceback)."""
    for ref in [*spec.image_refs(), *spec.video_refs()]:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise InvalidImage(f"{ref}: no such file" if not path.exists() else f"{ref}: not a file")
    for ref in spec.dataset_refs():
        path = Path(ref).expanduser()
        if not path.exists():
            raise InvalidImage(f"dataset {ref}: no such folder")


def _read_input(ref: str) -> bytes:
    try:
        return Path(ref).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidImage(f"{ref}: cannot read ({exc.strerror or exc})") from None


def run_local(
    spec: Any,
    *,
    device: str = "auto",
    precision: str = "auto",
    work_dir: Path | None = None,
    progress: bool = True,
    threads: int | None = None,
    max_seconds: float | None = None,
) -> Any:
    """Run ``spec`` with the file-path context; returns the engine's result.

    ``threads``: torch's CPU threads (default: torch's own choice); ``max_seconds``: a
    training run's time box (``EngineContext.max_seconds``).
    """
    from shared.engine import run_engine

    check_local_refs(spec)
    if threads:
        import torch

        torch.set_num_threads(threads)
    bar = ProgressBar(enabled=progress, unit="step")
    with cancel_on_sigint(lambda: bar.write("canceling after this step... (Ctrl-C again to abort)")) as flag:
        ctx = EngineContext(
            read_input=_read_input,
            progress=bar,
            is_canceled=flag.is_set,
            work_dir=Path(work_dir) if work_dir else Path("."),
            on_checkpoint=lambda p: bar.write(f"checkpoint: {p}"),
            device=device,
            precision=precision,
            max_seconds=max_seconds,
        )
        try:
            fan = get_method(spec.method).fanout
            if fan is None:
                return run_engine(spec, ctx)
            return _run_tiled(spec, ctx, fan, run_engine)
        finally:
            bar.close()


def _run_tiled(spec: Any, ctx: EngineContext, fan: Any, run_engine: Callable[[Any, EngineContext], Any]) -> Any:
    """A render the farm would split (above ``EngineContext.tile_size``): its tiles one after
    the other in this process, the same pixels as on a farm (``shared.engine.fanout.run_locally``);
    the assembled PNG read back as a ``RenderResult``."""
    import tempfile

    from PIL import Image

    from shared.engine.context import cancel_checks
    from shared.engine.fanout import run_locally
    from shared.engine.results import RenderFile, RenderResult

    with tempfile.TemporaryDirectory(prefix="stylefarm-tiles-") as tmp:
        tile_ctx = dataclasses.replace(ctx, work_dir=Path(tmp))
        with cancel_checks(tile_ctx):
            result = run_locally(spec, tile_ctx, fan.load_split(), fan.load_run_piece(), fan.load_assemble(),
                                 entry_point=run_engine)
        if isinstance(result, RenderFile):
            with Image.open(result.path) as img:
                return RenderResult(img.convert("RGB"), result.metrics)
        return result
