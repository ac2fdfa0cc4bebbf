"""Shared fixtures of the engine tests: tiny synthetic images, datasets and a 2-step AdaIN decoder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.imaging import png_bytes


def _image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth colour field plus texture: structured enough for VGG statistics to differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    chans = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(2, 12, size=3)
        chans.append(0.5 + 0.35 * np.sin(fx * xx * np.pi + fy * yy * np.pi + phase))
    arr = np.stack(chans, axis=-1) + rng.normal(0, 0.08, size=(height, width, 3))  # (H, W, 3)
    img = Image.fromarray((arr.clip(0, 1) * 255).astype(np.uint8), "RGB")
    return img if mode == "RGB" else img.convert(mode)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny tensors gain nothing from a second thread, and on a shared, busy CPU OpenMP's
    spinning barriers make 2-thread runs of these tests 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_png() -> Callable[..., bytes]:
    """``make_png(w, h, seed)`` -> PNG bytes of a synthetic RGB image."""

    def make(width: int, height: int, seed: int = 0) -> bytes:
        return png_bytes(_image(width, height, seed))

    return make


@pytest.fixture(scope="session")
def make_mask_png() -> Callable[..., bytes]:
    """``make_mask_png(w, h, box)`` -> PNG bytes of an L mask, white inside ``box`` (x0, y0, x1, y1) fractions."""

    def make(width: int, height: int, box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> bytes:
        arr = np.zeros((height, width), dtype=np.uint8)
        x0, y0, x1, y1 = box
        arr[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)] = 255
        return png_bytes(Image.fromarray(arr, "L"))

    return make


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(content folder, style folder): a few small synthetic images each, plus one junk file."""
    root = tmp_path_factory.mktemp("adain-data")
    content, style = root / "content", root / "style"
    content.mkdir()
    style.mkdir()
    for i in range(4):
        _image(48 + 8 * i, 40, seed=i).save(content / f"c{i}.png")
    for i in range(3):
        _image(40, 56, seed=100 + i).save(style / f"s{i}.jpg", quality=90)
    (content / "notes.txt").write_text("not an image")  # ignored by suffix
    return content, style


@pytest.fixture(scope="session")
def adain_checkpoint(tiny_datasets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim AdaIN decoder checkpoint trained for 2 steps on 32 px crops (fast, not good)."""
    from shared.engine.context import EngineContext
    from shared.engine.training.train_adain import run
    from shared.jobs.specs import TrainAdainSpec

    content, style = tiny_datasets
    work = tmp_path_factory.mktemp("adain-train")
    spec = TrainAdainSpec(
        name="tiny", content_dataset=str(content), style_dataset=str(style), steps=2, batch_size=2, image_size=32
    )
    return run(spec, EngineContext(work_dir=work)).checkpoint


# --- Gatys (optimize / masked) fixtures --------------------------------------------------


class RecordingContext:
    """Builds ``EngineContext``s reading refs from an in-memory dict and recording progress."""

    def __init__(self, refs: dict[str, bytes]) -> None:
        self.refs = refs

    def __call__(self, cancel_after: int | None = None, precision: str = "auto", **kwargs):
        from shared.engine.context import EngineContext

        reports: list = []
        ctx = EngineContext(
            read_input=lambda ref: self.refs[ref],
            progress=reports.append,
            is_canceled=lambda: cancel_after is not None and len(reports) >= cancel_after,
            device="cpu",
            precision=precision,
            **kwargs,
        )
        ctx.reports = reports  # type: ignore[attr-defined]  # the tests read what was reported
        return ctx


@pytest.fixture
def memory_refs(make_png: Callable[..., bytes], make_mask_png: Callable[..., bytes]) -> dict[str, bytes]:
    """Image refs -> bytes: a 48x40 content, two 40x40 styles of different texture, two half masks."""
    return {
        "content": make_png(48, 40, seed=1),
        "style_a": make_png(40, 40, seed=2),
        "style_b": make_png(40, 40, seed=3),
        "left": make_mask_png(48, 40, (0, 0, 0.5, 1)),
        "right": make_mask_png(48, 40, (0.5, 0, 1, 1)),
    }


@pytest.fixture
def engine_ctx(memory_refs: dict[str, bytes]) -> RecordingContext:
    """``engine_ctx(cancel_after=None, precision="auto")`` -> EngineContext over ``memory_refs``;
    its ``.reports`` lists the ``Progress`` reports; ``cancel_after=n`` cancels after n reports."""
    return RecordingContext(memory_refs)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-image optimizations on one thread (no OpenMP spin-waits on a shared CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
