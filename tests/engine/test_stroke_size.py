"""Stroke size under control (issue 14): ``fast`` and ``adain`` run at a working resolution
and upsample edge-aware, so the brush strokes keep their size relative to the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from shared.engine import quality
from shared.engine.context import EngineContext
from shared.engine.guided import guided_upsample, working_size
from shared.engine.methods import adain, fast
from shared.jobs.specs import AdainSpec, FastSpec

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTURED_STYLE = 19  # 'blue-yellow swirls': a fine texture with a fixed period in pixels



@pytest.fixture()
def content_path(tmp_path: Path, make_png) -> Path:
    path = tmp_path / "content.png"
    path.write_bytes(make_png(96, 72, seed=4))  # small: upscaled, it has no texture of its own
    return path


def test_working_size_only_shrinks() -> None:
    # given output sizes and stroke sizes
    # expect the working size to be the stroke size's fit, and None when nothing would shrink
    assert working_size((2048, 1536), 512) == (512, 384)
    assert working_size((512, 384), 512) is None
    assert working_size((300, 200), 512) is None
    assert working_size((2048, 1536), None) is None


def test_guided_upsample_is_the_identity_at_equal_size() -> None:
    # given a stylized picture and its guide at the same resolution
    g = torch.Generator().manual_seed(0)
    guide = torch.rand(1, 3, 24, 32, generator=g)  # (1, 3, h, w)
    src = torch.rand(1, 3, 24, 32, generator=g)  # (1, 3, h, w)
    # when "upsampled" to the guide's own size
    out = guided_upsample(src, guide, guide)
    # then nothing changes: the strokes and colours are the network's
    assert torch.allclose(out, src, atol=1e-5)


def test_guided_upsample_puts_back_the_guides_sharp_edge() -> None:
    # given a full-size guide with a sharp vertical edge, and a low-resolution copy of it as the source
    hi = torch.zeros(1, 3, 64, 64)
    hi[..., 29:] = 1.0  # an edge between columns 28 and 29, off the 4x grid
    lo = F.interpolate(hi, size=(16, 16), mode="area")  # (1, 3, 16, 16)
    # when upsampled 4x, guided versus plain bilinear
    guided = guided_upsample(lo, lo, hi)
    bilinear = F.interpolate(lo, size=(64, 64), mode="bilinear", align_corners=False)

    def ramp(x: torch.Tensor) -> int:  # pixels of the row that are neither black nor white
        row = x[0, 0, 32]
        return int(((row > 0.1) & (row < 0.9)).sum())

    # then the guided edge is as sharp as the guide's, the bilinear one is smeared
    assert ramp(guided) <= 1 and ramp(bilinear) >= 4, (ramp(guided), ramp(bilinear))


def _fast(content: Path, size: int, stroke: int | None) -> Image.Image:
    spec = FastSpec(content=str(content), size=size, style=TEXTURED_STYLE, stroke_size=stroke)
    return fast.run(spec, EngineContext(precision="fp32")).image


def test_fast_stroke_size_keeps_the_texture_scale_per_image(content_path: Path) -> None:
    # given a 128 px render (the look to keep)
    small = quality.dominant_frequency(_fast(content_path, 128, None))
    # when rendering at 512 px with stroke_size 128, and without a stroke size
    kept = quality.dominant_frequency(_fast(content_path, 512, 128))
    free = quality.dominant_frequency(_fast(content_path, 512, None))
    # then with it the texture has the same cycles per image; without it, it is much finer
    assert abs(np.log2(kept / small)) < 0.25, (small, kept)
    assert free > 2.0 * small, (small, free)


def test_fast_default_stroke_size_leaves_small_renders_alone(content_path: Path) -> None:
    # given the spec default (stroke size 512) and an output of at most that size
    spec = FastSpec(content=str(content_path), size=256, style=TEXTURED_STYLE)
    # when rendered with and without the default
    a = fast.run(spec, EngineContext(precision="fp32"))
    b = fast.run(spec.model_copy(update={"stroke_size": None}), EngineContext(precision="fp32"))
    # then the pictures are the same and the network ran at the output size
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.metrics["working_size"] == [256, 192]


def test_adain_stroke_size_works_at_the_working_resolution(adain_checkpoint: Path, make_png) -> None:
    # given a content, a style and a decoder
    files = {"content": make_png(96, 64, seed=1), "style": make_png(64, 64, seed=2)}
    ctx = EngineContext(read_input=files.__getitem__, precision="fp32")
    base = {"content": "content", "styles": [{"image": "style"}], "model": str(adain_checkpoint)}
    # when rendered at 192 px with stroke_size 64, and at 64 px
    big = adain.run(AdainSpec(**base, size=192, stroke_size=64), ctx)
    small = adain.run(AdainSpec(**base, size=64, stroke_size=None), ctx)
    # then the big one is the small one upsampled (same picture at low frequencies), at full size
    assert big.image.size == (192, 128) and big.metrics["working_size"] == [64, 43]
    down = np.asarray(big.image.resize(small.image.size, Image.Resampling.BOX), dtype=np.float64)
    assert quality.psnr(down.round().astype(np.uint8), small.image) > 25.0

