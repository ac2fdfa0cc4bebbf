"""Giant ``optimize`` and ``masked`` renders by tiles, coarse to fine (the ``split`` /
``run_piece`` / ``assemble`` of ``shared.engine.fanout``).

Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer" (CVPR 2017),
sec. 5 ("coarse-to-fine"): a high-resolution stylization starts from an upsampled
low-resolution one, which fixes the large-scale layout, and only refines the detail. Here the
refinement is split in tiles:

* ``split`` renders the whole job once at ``ctx.tile_size`` (the method's ordinary entry
  point: one worker, a tile's memory) and hands that coarse render to every tile.
* each tile (``*_piece``) optimizes its window plus ``GATYS_MARGIN`` px of context at full
  resolution, starting from the coarse render's pixels of that box, against the SAME style
  targets: the style images are sized for the whole output (not for the tile) and their
  colours matched to the whole content, so every tile has identical Gram matrices; a masked
  job's regions are cut from its masks like the content and weighted by their coverage of
  the whole image.
* the tiles are blended with feathered overlaps (``shared.engine.methods.tiled.assemble``).

Because all tiles start from one layout and pull toward one set of statistics, neighbours
agree; the overlap feathering hides what detail differs.
"""

from __future__ import annotations

import io
import time
from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from shared.engine.context import EngineContext
from shared.engine.fanout import Piece, PieceResult, SplitPlan
from shared.engine.images import decode_image, fit_size, resize, to_image, to_tensor
from shared.engine.methods import masked as masked_method
from shared.engine.methods import optimize as optimize_method
from shared.engine.methods.gatys import StepCounter, StyleInput, load_content, load_style, region_tensor, render
from shared.engine.methods.tiled import TILE_FILE, _pieces, _tile_of, context_box, crop_resized, grid_for
from shared.imaging import png_bytes
from shared.jobs.specs import GatysParams, MaskedSpec, OptimizeSpec

COARSE_BLOB = "coarse.png"
GATYS_MARGIN = 64  # context px around a tile's window: VGG's receptive field at relu4_2 is ~ 90 px
GATYS_ALIGN = 16  # relu5_x sits after four 2x2 max-pools


def _split(spec: OptimizeSpec | MaskedSpec, ctx: EngineContext, run: Any) -> SplitPlan | None:
    if spec.size <= ctx.tile_size:
        return None
    content, _ = load_content(ctx, spec.content)
    width, height = fit_size(*content.size, spec.size)
    tiles = grid_for(width, height, ctx, GATYS_ALIGN)
    if tiles is None:
        return None
    coarse = run(spec.model_copy(update={"size": ctx.tile_size}), ctx).image
    return SplitPlan(_pieces(tiles, width, height), {COARSE_BLOB: png_bytes(coarse)})


def optimize_split(spec: OptimizeSpec, ctx: EngineContext) -> SplitPlan | None:
    """Tiles of an ``optimize`` render and its coarse render at ``tile_size``."""
    return _split(spec, ctx, optimize_method.run)


def masked_split(spec: MaskedSpec, ctx: EngineContext) -> SplitPlan | None:
    """Tiles of a ``masked`` render and its coarse render at ``tile_size``."""
    return _split(spec, ctx, masked_method.run)


def _refine(spec: GatysParams, piece: Piece, ctx: EngineContext, styles: list[StyleInput],
            content: Image.Image, digest: str, composite: bool = False, feather: float = 0.0) -> PieceResult:
    started = time.perf_counter()
    tile, width, height = _tile_of(piece)
    box = context_box(tile, width, height, GATYS_MARGIN, GATYS_ALIGN)
    bw, bh = box[2] - box[0], box[3] - box[1]
    content_tile = crop_resized(content, width, height, box)  # (bw, bh)
    with Image.open(io.BytesIO(ctx.read_shared(COARSE_BLOB))) as coarse:
        init = to_tensor(crop_resized(coarse.convert("RGB"), width, height, box))  # (1, 3, bh, bw)
    whole = to_tensor(resize(content, fit_size(width, height, ctx.tile_size)))  # (1, 3, h, w): colour reference
    cut = [replace(s, region=crop_resized(s.region, width, height, box)) if s.region is not None else s
           for s in styles]
    params = spec.model_copy(update={"size": max(bw, bh), "levels": 1})
    kwargs: dict[str, Any] = {"init01": init, "style_wh": (width, height), "color_ref01": whole}
    if composite:  # masked, composite mode: each region's style rendered alone, blended by its mask
        counter = StepCounter(params.steps * len(cut))
        renders, masks = [], []
        for i, st in enumerate(cut):
            xi, _ = render(params, content_tile, digest, [replace(st, region=None, weight=1.0)], ctx, counter,
                           stage_prefix=f"region {i + 1}/{len(cut)} ", **kwargs)
            renders.append(xi)
            assert st.region is not None
            masks.append(region_tensor(st.region, (bh, bw), xi.device))
        scale = min(width, height) / min(bw, bh)  # feather is a fraction of the WHOLE image's short side
        x01 = masked_method.blend_renders(renders, masks, to_tensor(content_tile, renders[0].device),
                                          feather * scale)
    else:
        x01, _ = render(params, content_tile, digest, cut, ctx, StepCounter(params.steps), **kwargs)
    wx, wy = tile.x0 - box[0], tile.y0 - box[1]
    x01 = x01[..., wy : wy + tile.height, wx : wx + tile.width]  # (1, 3, th, tw)
    return PieceResult({TILE_FILE: png_bytes(to_image(x01))},
                       {"seconds": round(time.perf_counter() - started, 4), "context": list(box)})


def optimize_piece(spec: OptimizeSpec, piece: Piece, ctx: EngineContext) -> PieceResult:
    """One tile of an ``optimize`` render, refined at full resolution from the coarse render."""
    content, digest = load_content(ctx, spec.content)
    styles = [load_style(ctx, s, what=f"styles[{i}]") for i, s in enumerate(spec.styles)]
    total = sum(s.weight for s in styles)
    styles = sorted((replace(s, weight=s.weight / total) for s in styles), key=lambda s: -s.weight)
    return _refine(spec, piece, ctx, styles, content, digest)


def masked_piece(spec: MaskedSpec, piece: Piece, ctx: EngineContext) -> PieceResult:
    """One tile of a ``masked`` render: its regions cut like the content, weighted by their
    coverage of the whole image (joint mode), as the untiled render weights them."""
    content, digest = load_content(ctx, spec.content)
    styles, coverage = masked_method.load_regions(spec, ctx, content)
    if spec.mode == "joint":
        styles = [replace(s, weight=s.weight * c) for s, c in zip(styles, coverage["coverage"], strict=True)]
        return _refine(spec, piece, ctx, styles, content, digest)
    return _refine(spec, piece, ctx, styles, content, digest, composite=True, feather=spec.feather)


def coarse_image(blob: bytes) -> torch.Tensor:
    """The coarse render of a split plan as (1, 3, h, w) in [0, 1] (tests, benchmarks)."""
    return to_tensor(decode_image(blob, what="coarse render"))
