"""Giant renders by tiles: the ``split`` / ``run_piece`` / ``assemble`` functions
(``shared.engine.fanout``) of ``fast`` and ``adain``.

An output larger than ``ctx.tile_size`` on its long side becomes a grid of overlapping tiles
(``shared.engine.tiles``), one child job each; smaller ones run whole (``split`` answers None).

* **Shared normalisation statistics.** Both networks normalise features per image: ``fast``
  with conditional instance norm after every convolution (Dumoulin et al. 2017), ``adain``
  once, at relu4_1, to the style's mean and std (Huang & Belongie 2017, Eq. 8). A tile
  normalised with its own statistics disagrees with its neighbours in colour and contrast;
  so the splitter runs the whole image once, downscaled to at most ``tile_stats_size`` (2048
  px: what one worker rendered whole before tiling, a constant whatever the output), records
  those statistics (every CIN layer's mean and variance; the relu4_1 mean and std of the
  content and the style targets) and hands them to every tile, which normalises with them
  instead of its own: thumbnail instance normalisation (Chen et al. 2022, "Towards
  Ultra-Resolution Neural Style Transfer via Thumbnail Instance Normalization", AAAI 2022).
* **Context margins.** Each tile runs on its window plus ``margin`` px of real image on every
  side (the networks' receptive fields), aligned to their strides, and keeps only its window:
  tile borders see the same pixels the whole image would.
* **Feathered overlaps.** The assembler blends neighbours with linear weights across their
  overlap and writes the PNG band by band (``shared.imaging.PngRowWriter``).

The content of a tile is cut from the source image by resizing only the box it covers
(Pillow's ``resize(box=...)`` samples exactly the pixels of the whole resize), so no worker
ever holds the whole output.
"""

from __future__ import annotations

import io
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from shared.engine import style_cache
from shared.engine.context import EngineContext
from shared.engine.device import autocast, inference_dtype, pick_device
from shared.engine.fanout import Piece, PieceOutput, PieceResult, SplitPlan
from shared.engine.images import (
    check_mask_aspect,
    crop_to,
    decode_image,
    decode_mask,
    fit_size,
    resize,
    to_image,
    to_tensor,
)
from shared.engine.losses import mean_std
from shared.engine.methods.adain import _encode, _feature_mask, _target, load_decoder, style_stats
from shared.engine.methods.fast import blend_strength, load_fast_model, preserve_color, style_vector, stylize_tensor
from shared.engine.nets.transformer_infer import StatsTape
from shared.engine.nets.vgg import load_vgg19
from shared.engine.results import RenderFile
from shared.engine.tiles import Tile, assemble_bands, tile_grid
from shared.imaging import PngRowWriter, png_bytes
from shared.jobs.specs import AdainSpec, FastSpec

TILE_FILE = "image.png"  # shared.jobs.outcomes.PIECE_IMAGE: GET /v1/jobs/{child}/result serves it
STATS_BLOB = "norm-stats.pt"
#: Context around each tile's window, px: about the networks' receptive field radius
#: (fast: 9x9 + two stride-2 3x3 + 12 3x3 at 1/4 = ~65 px; adain: VGG to relu4_1 ~ 90 px + decoder).
FAST_MARGIN = 64
ADAIN_MARGIN = 96
FAST_ALIGN = 4  # CINTransformer.config.multiple of the built-in (two stride-2 layers)
ADAIN_ALIGN = 8  # three 2x2 max-pools to relu4_1


# --- geometry ------------------------------------------------------------------------------


def output_size(content: Image.Image, size: int) -> tuple[int, int]:
    return fit_size(*content.size, size)


def grid_for(width: int, height: int, ctx: EngineContext, align: int) -> list[Tile] | None:
    """The tiles of an output, or None when it fits in one tile."""
    if max(width, height) <= ctx.tile_size:
        return None
    return tile_grid(width, height, ctx.tile_size, ctx.tile_overlap, align)


def stats_size(width: int, height: int, ctx: EngineContext) -> tuple[int, int]:
    """The size of the one whole-image pass: the output's, or downscaled to ``tile_stats_size``."""
    return fit_size(width, height, min(max(width, height), ctx.tile_stats_size))


def context_box(tile: Tile, width: int, height: int, margin: int, align: int) -> tuple[int, int, int, int]:
    """The tile's window plus ``margin`` px each side, clipped to the image, its start aligned
    down to ``align`` (the networks' stride grid stays the whole image's)."""
    x0 = max(0, (tile.x0 - margin) // align * align)
    y0 = max(0, (tile.y0 - margin) // align * align)
    return x0, y0, min(width, tile.x1 + margin), min(height, tile.y1 + margin)


def crop_resized(src: Image.Image, width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """The pixels ``box`` of ``src`` resized to ``width x height``, without making the whole
    resized image (same Lanczos sampling as ``resize``)."""
    x0, y0, x1, y1 = box
    sx, sy = src.width / width, src.height / height
    resample = Image.Resampling.LANCZOS if src.mode != "L" else Image.Resampling.BILINEAR
    return src.resize((x1 - x0, y1 - y0), resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))


def _pieces(tiles: list[Tile], width: int, height: int) -> list[Piece]:
    return [Piece(t.label(), {"tile": t.as_data(), "width": width, "height": height}) for t in tiles]


def _tile_of(piece: Piece) -> tuple[Tile, int, int]:
    return Tile.from_data(piece.data["tile"]), int(piece.data["width"]), int(piece.data["height"])


def _save(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


# --- fast: CIN statistics of the whole image (recorded and replayed by the plan's StatsTape) ----


def fast_split(spec: FastSpec, ctx: EngineContext) -> SplitPlan | None:
    """Tiles of a ``fast`` render, and every CIN layer's statistics of the whole image at
    ``min(size, tile_stats_size)`` (one pass)."""
    if spec.size <= ctx.tile_size:  # the output's long side is ``size``: one tile
        return None
    content = decode_image(ctx.read_input(spec.content), what="content")
    width, height = output_size(content, spec.size)
    tiles = grid_for(width, height, ctx, FAST_ALIGN)
    if tiles is None:
        return None
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    model = load_fast_model(spec.model, ctx, device)
    vec = style_vector(model, spec.style_weights())  # (S,)
    thumb = to_tensor(resize(content, stats_size(width, height, ctx)), device)  # (1, 3, h, w)
    tape = StatsTape()  # records every CIN layer's (mean, var) of the whole image
    stylize_tensor(model.net, thumb, vec, dtype, stats=tape)
    ctx.report(1, 1, stage="split")
    return SplitPlan(_pieces(tiles, width, height), {STATS_BLOB: _save(tape.pairs)})


def fast_piece(spec: FastSpec, piece: Piece, ctx: EngineContext) -> PieceResult:
    """One tile of a ``fast`` render, normalised with the whole image's statistics."""
    started = time.perf_counter()
    tile, width, height = _tile_of(piece)
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    model = load_fast_model(spec.model, ctx, device)
    vec = style_vector(model, spec.style_weights())  # (S,)
    stats = StatsTape(_load(ctx.read_shared(STATS_BLOB)))
    content = decode_image(ctx.read_input(spec.content), what="content")
    box = context_box(tile, width, height, FAST_MARGIN, FAST_ALIGN)
    x = to_tensor(crop_resized(content, width, height, box), device)  # (1, 3, h, w)
    ctx.report(1, 3, stage="load")
    ctx.check_cancel()
    y = stylize_tensor(model.net, x, vec, dtype, stats=stats)  # (1, 3, h, w), whole-image statistics
    ctx.report(2, 3, stage="stylize")
    if spec.preserve_color:
        y = preserve_color(y, x)
    y = blend_strength(y, x, spec.strength)
    wx, wy = tile.x0 - box[0], tile.y0 - box[1]
    y = y[..., wy : wy + tile.height, wx : wx + tile.width]  # (1, 3, th, tw): the window only
    ctx.report(3, 3, stage="done")
    return PieceResult({TILE_FILE: png_bytes(to_image(y))},
                       {"seconds": round(time.perf_counter() - started, 4), "context": list(box)})


# --- adain: relu4_1 statistics of the whole image -------------------------------------------


def _adain_setup(spec: AdainSpec, ctx: EngineContext) -> tuple[Any, Any, torch.device, torch.dtype, str]:
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    decoder, vgg_weights = load_decoder(spec.model, ctx, device)
    return decoder, load_vgg19(vgg_weights, device), device, dtype, vgg_weights


def adain_split(spec: AdainSpec, ctx: EngineContext) -> SplitPlan | None:
    """Tiles of an ``adain`` render; the content's relu4_1 mean and std of the whole image at
    ``min(size, tile_stats_size)`` and the style targets, once."""
    if spec.size <= ctx.tile_size:
        return None
    content_bytes = ctx.read_input(spec.content)
    content = decode_image(content_bytes, what="content image")
    width, height = output_size(content, spec.size)
    tiles = grid_for(width, height, ctx, ADAIN_ALIGN)
    if tiles is None:
        return None
    _, vgg, device, dtype, vgg_weights = _adain_setup(spec, ctx)
    thumb = to_tensor(resize(content, stats_size(width, height, ctx)))  # (1, 3, h, w)
    with torch.inference_mode():
        c_mean, c_std = mean_std(_encode(vgg, thumb, device, dtype, pad=False))  # (1, 512, 1, 1) each
        styles = []
        for i, style in enumerate(spec.styles):
            style_bytes = ctx.read_input(style.image)
            mask_bytes = ctx.read_input(style.mask) if style.mask else None
            key = ("adain-tiled", style_cache.sha256_bytes(style_bytes),
                   style_cache.sha256_bytes(mask_bytes) if mask_bytes else None, spec.style_size,
                   style_cache.sha256_bytes(content_bytes) if spec.preserve_color else None, vgg_weights,
                   str(device), str(dtype))
            styles.append(style_cache.get_or_compute(key, partial(
                style_stats, style_bytes, mask_bytes, spec.style_size, vgg, device, dtype,
                thumb if spec.preserve_color else None, f"style {i + 1}")))
            ctx.check_cancel()
    blob = {"content": (c_mean.cpu(), c_std.cpu()), "styles": [(m.cpu(), s.cpu()) for m, s in styles]}
    ctx.report(1, 1, stage="split")
    return SplitPlan(_pieces(tiles, width, height), {STATS_BLOB: _save(blob)})


def adain_piece(spec: AdainSpec, piece: Piece, ctx: EngineContext) -> PieceResult:
    """One tile of an ``adain`` render: AdaIN with the whole image's content statistics."""
    started = time.perf_counter()
    tile, width, height = _tile_of(piece)
    decoder, vgg, device, dtype, _ = _adain_setup(spec, ctx)
    blob = _load(ctx.read_shared(STATS_BLOB))
    content_stats = tuple(t.to(device) for t in blob["content"])
    stats = [(m.to(device), s.to(device)) for m, s in blob["styles"]]
    content_img = decode_image(ctx.read_input(spec.content), what="content image")
    box = context_box(tile, width, height, ADAIN_MARGIN, ADAIN_ALIGN)
    x = to_tensor(crop_resized(content_img, width, height, box))  # (1, 3, h, w)
    masks = None
    if spec.masks is not None:
        masks = []
        for i, ref in enumerate(spec.masks):
            mask_img = decode_mask(ctx.read_input(ref), what=f"mask {i + 1}")
            check_mask_aspect(mask_img, content_img.size, f"mask {i + 1}")
            m = to_tensor(crop_resized(mask_img, width, height, box)).to(device)  # (1, 1, h, w)
            masks.append(_feature_mask(m))  # (1, 1, h/8, w/8)
    ctx.report(1, 3, stage="load")
    ctx.check_cancel()
    with torch.inference_mode():
        feat = _encode(vgg, x, device, dtype)  # (1, 512, h8/8, w8/8)
        t = _target(feat, stats, [s.weight for s in spec.styles], masks, spec.alpha,
                    content_stats=(content_stats[0], content_stats[1]))  # (1, 512, h8/8, w8/8)
        ctx.report(2, 3, stage="encode")
        with autocast(device, dtype):
            out = decoder(t.contiguous(memory_format=torch.channels_last))  # (1, 3, h8, w8)
        out = crop_to(out.float(), (x.shape[-2], x.shape[-1])).clamp(0, 1)  # (1, 3, h, w)
    wx, wy = tile.x0 - box[0], tile.y0 - box[1]
    out = out[..., wy : wy + tile.height, wx : wx + tile.width]  # (1, 3, th, tw)
    ctx.report(3, 3, stage="done")
    return PieceResult({TILE_FILE: png_bytes(to_image(out))},
                       {"seconds": round(time.perf_counter() - started, 4), "context": list(box)})


# --- assembly (every tiled method) ----------------------------------------------------------


def _tile_pixels(pieces: dict[int, PieceOutput], tile: Tile) -> np.ndarray:
    with Image.open(io.BytesIO(pieces[tile.index].read(TILE_FILE))) as img:
        return np.asarray(img.convert("RGB"))  # (th, tw, 3)


def assemble(spec: Any, pieces: list[PieceOutput], ctx: EngineContext) -> RenderFile:
    """Blend the tiles (feathered) into ``work_dir/output.png``, one band of tiles at a time."""
    started = time.perf_counter()
    if not pieces:
        raise ValueError("nothing to assemble")
    width, height = int(pieces[0].data["width"]), int(pieces[0].data["height"])
    tiles = [Tile.from_data(p.data["tile"]) for p in pieces]
    by_index = {p.index: p for p in pieces}
    path = ctx.work_dir / "output.png"
    writer = PngRowWriter(path, width, height)
    done = [0]

    def sink(rows: np.ndarray) -> None:
        writer.write(rows)
        done[0] += rows.shape[0]
        ctx.report(done[0], height, stage="assemble")
        ctx.check_cancel()

    assemble_bands(tiles, width, height, partial(_tile_pixels, by_index), sink)
    writer.close()
    rows, cols = tiles[-1].rows, tiles[-1].cols
    piece_seconds = [float(p.metrics.get("seconds") or 0.0) for p in pieces]
    return RenderFile(path, width, height, {
        "method": spec.method, "tiled": True, "tiles": len(tiles), "grid": [rows, cols],
        "tile_size": max(t.width for t in tiles), "overlap": ctx.tile_overlap,
        "piece_seconds_total": round(sum(piece_seconds), 3),
        "assemble_seconds": round(time.perf_counter() - started, 3),
        "width": width, "height": height,
    })
