"""Several styles on one image, each confined to a region: spatial control of Gatys,
Ecker, Bethge, Hertzmann & Shechtman 2017, "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017), section 4.

``mode="joint"`` (the paper's method): one optimization. For region r with content mask
m_r, the generated image's feature maps at every style layer are multiplied by m_r
(area-resized to the layer) before the Gram matrix, which is normalized by the mask area
``C * sum(m_r)``, and compared with the Gram target of region r's style (itself optionally
taken from a masked part of the painting). The content loss covers the whole image. Region
r's style loss is weighted by ``style.weight * coverage(m_r)``, which gives every pixel the
same style/content balance as a single-style ``optimize`` job (the masked Gram's gradient per
pixel scales as 1/area). Areas no mask covers get content and TV loss only: they stay close
to the photo (with some spill from neighbouring regions through the receptive fields).

``mode="composite"``: each style is rendered over the whole image with the ``optimize`` core,
then the renders are blended by the masks, normalized where they overlap, optionally
feathered with a Gaussian blur (sigma = ``feather`` x the short side). Uncovered areas
show the content image.

Masks: white = region. Each must have the content's aspect ratio (any resolution), be
non-empty and cover at least ``min_coverage`` of the image; otherwise ``InvalidMask``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

from shared.engine.context import EngineContext
from shared.engine.images import check_mask_aspect, decode_mask, fit_size, resize, to_image, to_tensor
from shared.engine.methods.gatys import (
    StepCounter,
    StyleInput,
    load_content,
    load_style,
    region_tensor,
    render,
    total_steps,
)
from shared.engine.results import RenderResult
from shared.errors import InvalidMask
from shared.jobs.specs import MaskedSpec

log = logging.getLogger(__name__)

UNCOVERED_WARNING = 0.5  # log a warning when masks leave more than this fraction uncovered


def load_regions(spec: MaskedSpec, ctx: EngineContext, content: Image.Image) -> tuple[list[StyleInput], dict]:
    """Decode and validate the region masks; returns the styles (with ``region``) and coverage stats."""
    out_w, out_h = fit_size(*content.size, spec.size)
    styles: list[StyleInput] = []
    masks: list[torch.Tensor] = []
    coverages: list[float] = []
    for i, region in enumerate(spec.regions):
        what = f"regions[{i}].mask"
        mask = decode_mask(ctx.read_input(region.mask), what=what)
        check_mask_aspect(mask, content.size, what)
        m = region_tensor(mask, (out_h, out_w))  # (1, 1, H, W)
        coverage = float(to_tensor(mask).mean())  # at the mask's own resolution: exact
        if mask.getextrema()[1] == 0:
            raise InvalidMask(f"{what}: the mask is empty (all black); white marks where regions[{i}]'s style goes")
        if coverage < spec.min_coverage:
            raise InvalidMask(
                f"{what}: covers {coverage:.3%} of the image, below min_coverage {spec.min_coverage:.3%}; "
                "enlarge the white region or lower min_coverage"
            )
        style = load_style(ctx, region.style, what=f"regions[{i}].style.image")
        styles.append(replace(style, region=mask, name=f"region {i + 1}"))
        masks.append(m)
        coverages.append(coverage)
    union = torch.cat(masks, dim=1).sum(dim=1).clamp(max=1.0)  # (1, H, W)
    uncovered = float((union < 0.5).float().mean())
    if uncovered > UNCOVERED_WARNING:
        log.warning("masked: %.0f%% of the image is in no region and keeps the content's look", 100 * uncovered)
    return styles, {"coverage": [round(c, 4) for c in coverages], "uncovered_fraction": round(uncovered, 4)}


def blend_renders(renders: list[torch.Tensor], masks: list[torch.Tensor], content01: torch.Tensor,
                  feather: float) -> torch.Tensor:
    """Blend renders (1, 3, H, W) by masks (1, 1, H, W): normalized overlaps, content where uncovered."""
    h, w = content01.shape[-2:]
    if feather > 0:
        sigma = feather * min(h, w)
        k = 2 * math.ceil(3 * sigma) + 1
        k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)  # odd and not larger than the image
        masks = [gaussian_blur(m, [k, k], [sigma, sigma]) for m in masks]
    stack = torch.cat(masks, dim=1)  # (1, R, H, W)
    total = stack.sum(dim=1, keepdim=True)  # (1, 1, H, W)
    weights = stack / total.clamp(min=1.0)  # (1, R, H, W)
    out = (1.0 - total.clamp(max=1.0)) * content01  # (1, 3, H, W)
    for r, x in enumerate(renders):
        out = out + weights[:, r : r + 1] * x
    return out.clamp(0, 1)


def run(spec: MaskedSpec, ctx: EngineContext) -> RenderResult:
    """Render ``spec``: an RGB image whose longest side is ``spec.size``."""
    content, digest = load_content(ctx, spec.content)
    styles, coverage = load_regions(spec, ctx, content)
    per_render = total_steps(spec, content)
    if spec.mode == "joint":
        weighted = [replace(s, weight=s.weight * c) for s, c in zip(styles, coverage["coverage"], strict=True)]
        x01, metrics = render(spec, content, digest, weighted, ctx, StepCounter(per_render))
    else:
        counter = StepCounter(per_render * len(styles))
        renders, parts = [], []
        for i, st in enumerate(styles):
            xi, mi = render(spec, content, digest, [replace(st, region=None, weight=1.0)], ctx, counter,
                            stage_prefix=f"region {i + 1}/{len(styles)} ")
            renders.append(xi)
            parts.append(mi)
        h, w = renders[0].shape[-2:]
        masks = []  # [(1, 1, H, W)]
        for s in styles:
            assert s.region is not None  # load_regions gives every style its region
            masks.append(region_tensor(s.region, (h, w), xi.device))
        content01 = to_tensor(resize(content, (w, h)), renders[0].device)  # (1, 3, H, W)
        x01 = blend_renders(renders, masks, content01, spec.feather)
        metrics = {
            "iterations": sum(p["iterations"] for p in parts),
            "seconds": round(sum(p["seconds"] for p in parts), 3),
            "precision": parts[0]["precision"],
            "device": parts[0]["device"],
            "optimizer": spec.optimizer,
            "renders": [{k: p[k] for k in ("content_loss", "style_loss", "tv_loss", "loss")} for p in parts],
        }
    metrics.update(coverage)
    metrics["method"] = "masked"
    metrics["mode"] = spec.mode
    metrics["regions"] = len(styles)
    return RenderResult(image=to_image(x01), metrics=metrics)
