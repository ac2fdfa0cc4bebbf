"""Giant renders by tiles (shared.engine.tiles, shared.engine.methods.tiled): the grid and its
feathered weights, the streamed PNG, and the seams of tiled fast / adain renders measured
against untiled renders of the same size."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.engine.context import EngineContext
from shared.engine.fanout import run_locally
from shared.engine.images import fit_size, resize, to_image, to_tensor
from shared.engine.methods import adain, fast, tiled
from shared.engine.tiles import Tile, blend, feather, psnr, seam_contrast, seam_peak, seam_ratio, tile_grid
from shared.imaging import PngRowWriter
from shared.jobs.specs import AdainSpec, FastSpec, MaskedSpec, OptimizeSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texture(width: int, height: int, seed: int) -> bytes:
    """A stationary texture (the same statistics everywhere): stripes at a few angles plus
    noise, so an overlap band and a tile interior differ only by a seam."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = []
    for _ in range(3):
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(9, 23), rng.uniform(0, 6)
        chans.append(0.5 + 0.3 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase))
    arr = np.stack(chans, -1) + rng.normal(0, 0.06, (height, width, 3))  # (H, W, 3)
    buf = io.BytesIO()
    Image.fromarray((arr.clip(0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --- the grid and the blend -------------------------------------------------------------


@pytest.mark.parametrize(("w", "h", "tile", "overlap", "align"), [(4096, 3000, 1024, 64, 4), (700, 300, 256, 48, 8),
                                                                   (3000, 1000, 1024, 64, 8), (200, 100, 256, 32, 4)])
def test_given_an_output_expect_tiles_cover_it_overlapping_and_aligned(w, h, tile, overlap, align) -> None:
    tiles = tile_grid(w, h, tile, overlap, align)
    assert all(t.width <= tile and t.height <= tile for t in tiles)
    cover = np.zeros((h, w), np.int32)
    for t in tiles:
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert cover.min() >= 1  # every pixel rendered
    by = {(t.row, t.col): t for t in tiles}
    for t in tiles:
        if (right := by.get((t.row, t.col + 1))) is not None:
            assert t.x1 - right.x0 >= overlap
            assert right.x0 % align == 0 or right.x1 == w  # the last one ends at the edge
        if (down := by.get((t.row + 1, t.col))) is not None:
            assert t.y1 - down.y0 >= overlap
    total = np.zeros((h, w), np.float32)
    for t in tiles:
        total[t.y0 : t.y1, t.x0 : t.x1] += feather(t, tiles)
    assert np.allclose(total, 1.0, atol=1e-5)  # feathered weights are a partition of unity


def test_given_tiles_of_one_image_when_blended_expect_the_image_exactly() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 520, 3), dtype=np.uint8)
    tiles = tile_grid(520, 300, 160, 40, 4)
    assert np.array_equal(blend(tiles, 520, 300, lambda t: image[t.y0 : t.y1, t.x0 : t.x1]), image)


def test_given_rows_in_bands_when_png_streamed_expect_pillow_reads_the_same_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    writer = PngRowWriter(tmp_path / "x.png", 53, 37)
    for a, b in ((0, 10), (10, 11), (11, 37)):
        writer.write(image[a:b])
    writer.close()
    with Image.open(tmp_path / "x.png") as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), image)
    short = PngRowWriter(tmp_path / "y.png", 53, 37)
    short.write(image[:5])
    with pytest.raises(ValueError, match="5 rows of 37"):
        short.close()


# --- seams of real renders --------------------------------------------------------------


def _ctx(refs: dict[str, bytes], work: Path, **tiles: int) -> EngineContext:
    return EngineContext(read_input=refs.__getitem__, device="cpu", precision="fp32", work_dir=work, **tiles)


def _tiled(spec, ctx: EngineContext, method: str) -> np.ndarray:
    split: Callable = getattr(tiled, f"{method}_split")
    piece: Callable = getattr(tiled, f"{method}_piece")
    out = run_locally(spec, ctx, split, piece, tiled.assemble)
    with Image.open(out.path) as img:
        return np.asarray(img.convert("RGB"))


def _naive_fast(spec: FastSpec, content: bytes, tiles: list[Tile]) -> np.ndarray:
    """The seams we avoid: each tile stylized alone (its own statistics, no context), pasted."""
    img = Image.open(io.BytesIO(content)).convert("RGB")
    size = fit_size(*img.size, spec.size)
    x = to_tensor(resize(img, size))  # (1, 3, H, W)
    model = fast.load_fast_model(spec.model)
    vec = fast.style_vector(model, spec.style_weights())
    out = np.zeros((size[1], size[0], 3), np.uint8)
    for t in tiles:
        y = fast.stylize_tensor(model.net, x[..., t.y0 : t.y1, t.x0 : t.x1], vec)
        out[t.y0 : t.y1, t.x0 : t.x1] = np.asarray(to_image(y))
    return out


def test_given_fast_render_when_tiled_expect_untiled_pixels_and_no_seam(tmp_path: Path) -> None:
    """Given a 512 px fast render split into 192 px tiles (the statistics pass at full size),
    expect the tiled render to match the untiled one: with the whole image's statistics the
    network is translation-equivariant, and 64 px of context cover its receptive field, so
    only float rounding at the tile borders differs (measured 60 dB; 40 dB is the engine's
    bar for "the same image", fast's bf16 contract). The seam measures of the overlap bands
    (``seam_ratio``: bands over interiors; ``seam_peak``: the sharpest column or row in a band
    over its neighbourhood) must be the untiled render's in the same bands within 2 % / 5 %.
    Naive tiling (each tile its own statistics, no context, pasted) fails them: the measures
    see seams (its peak measured 4.7-5.1 against 1.5-2.0 untiled)."""
    refs = {"c": texture(512, 384, seed=3)}
    spec = FastSpec(content="c", size=512, style=5)
    ctx = _ctx(refs, tmp_path, tile_size=192, tile_overlap=32)
    whole = np.asarray(fast.run(spec, ctx).image)
    tiles_img = _tiled(spec, ctx, "fast")
    tiles = tile_grid(512, 384, 192, 32, tiled.FAST_ALIGN)
    assert len(tiles) > 4 and tiles_img.shape == whole.shape
    assert psnr(tiles_img, whole) > 40.0
    seam_tiled, seam_whole = seam_ratio(tiles_img, tiles), seam_ratio(whole, tiles)
    assert abs(seam_tiled / seam_whole - 1) < 0.02, (seam_tiled, seam_whole)
    assert abs(seam_peak(tiles_img, tiles) / seam_peak(whole, tiles) - 1) < 0.05
    assert abs(seam_contrast(tiles_img, tiles) / seam_contrast(whole, tiles) - 1) < 0.02
    naive = _naive_fast(spec, refs["c"], tiles)
    assert psnr(naive, whole) < 30.0
    assert seam_peak(naive, tiles) > 2 * seam_peak(whole, tiles)
    # a zoomed crop across a seam, for the eye (bench/tiles.py writes the big one)
    seam_x = tiles[1].x0
    crop = np.concatenate([whole[100:196, seam_x - 48 : seam_x + 80], tiles_img[100:196, seam_x - 48 : seam_x + 80],
                           naive[100:196, seam_x - 48 : seam_x + 80]], axis=1)
    Image.fromarray(crop).resize((crop.shape[1] * 3, crop.shape[0] * 3), Image.Resampling.NEAREST).save(
        tmp_path / "seam_crop.png")


def test_given_adain_render_when_tiled_expect_untiled_pixels_and_no_seam(tmp_path: Path) -> None:
    """Given a 256 px adain render (shipped decoder) in 128 px tiles, expect PSNR > 35 dB to
    the untiled render (measured 42 dB at 768 px: the VGG encoder's receptive field, ~180 px
    with the decoder, is wider than the 96 px of context, so a little of the tile border
    shows) and the seam ratio within 3 % of the untiled one's."""
    refs = {"c": texture(256, 192, seed=4), "s": texture(96, 96, seed=9)}
    spec = AdainSpec(content="c", size=256, styles=[{"image": "s"}], style_size=96)
    ctx = _ctx(refs, tmp_path, tile_size=128, tile_overlap=32)
    whole = np.asarray(adain.run(spec, ctx).image)
    tiles_img = _tiled(spec, ctx, "adain")
    tiles = tile_grid(256, 192, 128, 32, tiled.ADAIN_ALIGN)
    assert tiles_img.shape == whole.shape
    assert psnr(tiles_img, whole) > 35.0
    assert abs(seam_ratio(tiles_img, tiles) / seam_ratio(whole, tiles) - 1) < 0.03
    assert abs(seam_peak(tiles_img, tiles) / seam_peak(whole, tiles) - 1) < 0.08


def test_given_small_render_expect_not_split(tmp_path: Path) -> None:
    refs = {"c": texture(100, 80, seed=1)}
    ctx = _ctx(refs, tmp_path, tile_size=128)
    assert tiled.fast_split(FastSpec(content="c", size=128), ctx) is None
    plan = tiled.fast_split(FastSpec(content="c", size=300), ctx)
    n = len(tile_grid(300, 240, 128, 64, tiled.FAST_ALIGN))
    assert plan is not None and len(plan.pieces) == n > 1 and tiled.STATS_BLOB in plan.shared
    assert plan.pieces[0].label.startswith(f"tile 1 of {n} (row 1, column 1")
    stats = torch.load(io.BytesIO(plan.shared[tiled.STATS_BLOB]), weights_only=True)
    assert len(stats) == sum(isinstance(m, torch.nn.Module) and type(m).__name__ == "ConditionalInstanceNorm"
                             for m in fast.load_fast_model("multistyle26").net.modules())


# --- optimize / masked: coarse to fine ----------------------------------------------------


@pytest.mark.parametrize("method", ["optimize", "masked"])
def test_given_gatys_render_when_tiled_expect_coarse_layout_refined_without_seams(
    tmp_path: Path, method: str, make_mask_png: Callable[..., bytes]
) -> None:
    """Given a 144 px optimize / masked job in 96 px tiles (2 Adam steps: the wiring, not the
    art), expect the whole-size output, every tile refined from the coarse render of the split
    (its pixels pull the tiles to one layout: PSNR to the upsampled coarse render above 15 dB
    after 2 steps), and no seam: the sharpest line in an overlap band within 10 % of the
    untiled render's in the same bands."""
    from shared.engine.methods import masked, optimize, tiled_gatys

    refs = {"c": texture(144, 108, seed=6), "s": texture(48, 48, seed=7), "s2": texture(48, 48, seed=8),
            "left": make_mask_png(144, 108, (0, 0, 0.5, 1)), "right": make_mask_png(144, 108, (0.5, 0, 1, 1))}
    common = {"content": "c", "size": 144, "steps": 2, "optimizer": "adam", "learning_rate": 4.0}
    spec: OptimizeSpec | MaskedSpec = (
        OptimizeSpec(styles=[{"image": "s"}], **common) if method == "optimize" else
        MaskedSpec(regions=[{"style": {"image": "s"}, "mask": "left"}, {"style": {"image": "s2"}, "mask": "right"}],
                   **common))
    ctx = _ctx(refs, tmp_path, tile_size=96, tile_overlap=16)
    split, piece = getattr(tiled_gatys, f"{method}_split"), getattr(tiled_gatys, f"{method}_piece")
    plan = split(spec, ctx)
    assert plan is not None and tiled_gatys.COARSE_BLOB in plan.shared
    with Image.open(io.BytesIO(plan.shared[tiled_gatys.COARSE_BLOB])) as coarse:
        assert max(coarse.size) == 96
        coarse_up = np.asarray(coarse.convert("RGB").resize((144, 108), Image.Resampling.BICUBIC))
    out = run_locally(spec, ctx, split, piece, tiled.assemble)
    with Image.open(out.path) as img:
        tiles_img = np.asarray(img.convert("RGB"))
    whole = np.asarray((optimize if method == "optimize" else masked).run(spec, ctx).image)
    tiles = tile_grid(144, 108, 96, 16, tiled_gatys.GATYS_ALIGN)
    assert tiles_img.shape == whole.shape == (108, 144, 3) and len(tiles) == len(plan.pieces) > 1
    assert psnr(tiles_img, coarse_up) > 15.0
    assert seam_peak(tiles_img, tiles) < 1.1 * seam_peak(whole, tiles)
