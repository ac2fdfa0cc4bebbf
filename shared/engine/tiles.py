"""Giant images as overlapping tiles: the grid, feathered blending, band-by-band assembly and
the seam measure. Pure numpy (the networks are in ``shared.engine.methods.tiled``).

* The grid (``tile_grid``): windows of at most ``tile`` px that overlap their neighbours by at
  least ``overlap`` px, their starts aligned to the networks' stride where possible, spread
  evenly so no tile is a sliver.
* Feathered blending (``feather``): inside an overlap each tile's weight falls linearly to 0
  towards its edge and its neighbour's rises, so the two always sum to 1 and a colour or
  stroke difference between neighbours fades over the whole band instead of stepping at a
  line ("feathering", Szeliski 2006, Image Alignment and Stitching: A Tutorial, sec. 6.2;
  Burt & Adelson 1983, A Multiresolution Spline With Application to Image Mosaics).
* Band-by-band assembly (``assemble_bands``): the output is put together one tile row at a
  time and handed to a row sink (a PNG writer, ``shared.imaging.PngRowWriter``), so the
  assembler holds one band of ``width x (tile + overlap)`` pixels, never the whole image.
* Seams (``seam_ratio``): the mean gradient magnitude across the overlap bands divided by the
  one in the tile interiors; on a stationary texture a seamless render gives ~1, a visible seam
  more (tests/engine/test_tiles.py compares it with the same bands of an untiled render).

Why tiles at all, and why the whole image's statistics: instance normalisation of a tile uses
that tile's statistics, so tiles rendered alone disagree in colour and contrast; computing the
statistics once on a downscaled whole image and normalising every tile with them removes the
disagreement (Chen et al. 2022, "Towards Ultra-Resolution Neural Style Transfer via Thumbnail
Instance Normalization", AAAI 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One window ``[x0, x1) x [y0, y1)`` of the output, at ``(row, col)`` of a ``rows x cols`` grid."""

    index: int
    row: int
    col: int
    rows: int
    cols: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def label(self) -> str:
        return (f"tile {self.index + 1} of {self.rows * self.cols} (row {self.row + 1}, column {self.col + 1}: "
                f"x {self.x0}-{self.x1}, y {self.y0}-{self.y1})")

    def as_data(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Tile:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


def axis_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of windows of ``min(tile, length)`` px covering ``[0, length)``, neighbours
    overlapping by at least ``overlap`` px, starts multiples of ``align`` (the last one ends at
    ``length``)."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile - align:
        raise ValueError(f"overlap {overlap} must be below the tile size {tile} minus the alignment {align}")
    step = tile - overlap - (align - 1)  # the largest spacing that keeps the overlap after aligning down
    n = math.ceil((length - tile) / step) + 1
    span = (length - tile) / (n - 1)
    starts = [int(i * span) // align * align for i in range(n - 1)] + [length - tile]
    return starts


def tile_grid(width: int, height: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """The tiles of a ``width x height`` output, row by row."""
    xs, ys = axis_starts(width, tile, overlap, align), axis_starts(height, tile, overlap, align)
    tw, th = min(tile, width), min(tile, height)
    return [
        Tile(r * len(xs) + c, r, c, len(ys), len(xs), x, y, x + tw, y + th)
        for r, y in enumerate(ys) for c, x in enumerate(xs)
    ]


def _ramp(n: int, before: int, after: int) -> np.ndarray:
    """1-D weights over ``n`` px: rising over the first ``before`` px, falling over the last
    ``after`` px (0 = no neighbour on that side), 1 elsewhere."""
    t = np.arange(n, dtype=np.float32) + 0.5
    w = np.ones(n, dtype=np.float32)
    if before > 0:
        w = np.minimum(w, t / before)
    if after > 0:
        w = np.minimum(w, (n - t) / after)
    return w


def feather(tile: Tile, tiles: list[Tile]) -> np.ndarray:
    """(h, w) blending weights of ``tile``: linear ramps across its actual overlap with each
    neighbour, so two neighbours' weights sum to 1 inside their overlap."""
    by_pos = {(t.row, t.col): t for t in tiles}
    left, right = by_pos.get((tile.row, tile.col - 1)), by_pos.get((tile.row, tile.col + 1))
    up, down = by_pos.get((tile.row - 1, tile.col)), by_pos.get((tile.row + 1, tile.col))
    wx = _ramp(tile.width, left.x1 - tile.x0 if left else 0, tile.x1 - right.x0 if right else 0)
    wy = _ramp(tile.height, up.y1 - tile.y0 if up else 0, tile.y1 - down.y0 if down else 0)
    return wy[:, None] * wx[None, :]  # (h, w)


def assemble_bands(
    tiles: list[Tile], width: int, height: int, read: Callable[[Tile], np.ndarray],
    sink: Callable[[np.ndarray], None],
) -> None:
    """Blend the tiles (``read(tile)``: (h, w, 3) uint8) with feathered weights and hand the
    output to ``sink`` as (rows, width, 3) uint8 bands, top to bottom. Holds one tile row's
    band (plus the overlap carried to the next) at a time."""
    grid_rows: dict[int, list[Tile]] = {}
    for t in tiles:
        grid_rows.setdefault(t.row, []).append(t)
    order = sorted(grid_rows)
    acc = np.zeros((0, width, 3), np.float32)  # rows [top, top + len(acc)) of the output
    wsum = np.zeros((0, width), np.float32)
    top = 0
    for i, r in enumerate(order):
        row_tiles = grid_rows[r]
        bottom = max(t.y1 for t in row_tiles)
        grow = bottom - (top + acc.shape[0])
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((grow, width, 3), np.float32)])
            wsum = np.concatenate([wsum, np.zeros((grow, width), np.float32)])
        for t in row_tiles:
            pixels = read(t)
            if pixels.shape != (t.height, t.width, 3):
                raise ValueError(f"{t.label()}: expected {(t.height, t.width, 3)} pixels, got {pixels.shape}")
            w = feather(t, tiles)  # (h, w)
            acc[t.y0 - top : t.y1 - top, t.x0 : t.x1] += pixels.astype(np.float32) * w[:, :, None]
            wsum[t.y0 - top : t.y1 - top, t.x0 : t.x1] += w
        done_until = min(t.y0 for t in grid_rows[order[i + 1]]) if i + 1 < len(order) else height
        n = done_until - top
        if np.any(wsum[:n] <= 0):
            raise ValueError("the tiles leave pixels uncovered")
        sink(np.clip(np.rint(acc[:n] / wsum[:n, :, None]), 0, 255).astype(np.uint8))
        acc, wsum, top = acc[n:], wsum[n:], done_until
    if top != height:
        raise ValueError(f"the tiles cover rows up to {top} of {height}")


def blend(tiles: list[Tile], width: int, height: int, read: Callable[[Tile], np.ndarray]) -> np.ndarray:
    """``assemble_bands`` into one (height, width, 3) uint8 array (sizes that fit in memory)."""
    bands: list[np.ndarray] = []
    assemble_bands(tiles, width, height, read, bands.append)
    return np.concatenate(bands)


# --- seams --------------------------------------------------------------------------------


def overlap_bands(tiles: list[Tile]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The x ranges of the vertical overlap bands and the y ranges of the horizontal ones."""
    xs = sorted({(a.x0, b.x1) for a in tiles for b in tiles if a.row == b.row and a.col == b.col + 1})
    ys = sorted({(a.y0, b.y1) for a in tiles for b in tiles if a.col == b.col and a.row == b.row + 1})
    return xs, ys


def _in_ranges(n: int, ranges: Iterable[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(n, bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


def seam_ratio(image: np.ndarray, tiles: list[Tile]) -> float:
    """Mean gradient magnitude across the overlap bands over the one in the tile interiors.

    ``image`` (H, W, 3) uint8. Horizontal differences are measured in the vertical bands
    (a seam between two columns of tiles is a jump from left to right) and vertical ones in
    the horizontal bands; the interiors are the pixels in no band. ~1 on a stationary texture
    when there is no seam; nan for a single tile."""
    img = image.astype(np.float32)
    xs, ys = overlap_bands(tiles)
    if not xs and not ys:
        return float("nan")
    h, w = img.shape[:2]
    gx = np.abs(np.diff(img, axis=1)).mean(axis=2)  # (H, W-1)
    gy = np.abs(np.diff(img, axis=0)).mean(axis=2)  # (H-1, W)
    in_x, in_y = _in_ranges(w, xs), _in_ranges(h, ys)
    band_vals = []
    if xs:
        band_vals.append(gx[:, in_x[:-1]].ravel())
    if ys:
        band_vals.append(gy[in_y[:-1], :].ravel())
    interior = np.concatenate([gx[~in_y][:, ~in_x[:-1]].ravel(), gy[~in_y[:-1]][:, ~in_x].ravel()])
    return float(np.concatenate(band_vals).mean() / max(interior.mean(), 1e-6))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of one shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _midway(bands: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Bands of the same widths as ``bands``, centred halfway between neighbouring band centres
    (the first one halfway from the image's start): control regions with no seam."""
    centres = [0.0] + [(a + b) / 2 for a, b in bands]
    out = []
    for (a, b), c0, c1 in zip(bands, centres[:-1], centres[1:], strict=True):
        mid, half = (c0 + c1) / 2, (b - a) / 2
        lo = max(0, int(mid - half))
        out.append((lo, min(length, lo + (b - a))))
    return out


def seam_contrast(image: np.ndarray, tiles: list[Tile]) -> float:
    """Mean gradient magnitude across the overlap bands over the one across bands of the same
    widths halfway between them (``seam_ratio`` with nearby control bands instead of all
    interiors: less sensitive to an image whose detail varies from place to place). ~1 when
    there is no seam; a render needs no untiled reference for it (the e2e test at 4096 px)."""
    img = image.astype(np.float32)
    xs, ys = overlap_bands(tiles)
    h, w = img.shape[:2]
    gx = np.abs(np.diff(img, axis=1)).mean(axis=2)  # (H, W-1)
    gy = np.abs(np.diff(img, axis=0)).mean(axis=2)  # (H-1, W)

    def energy(bx: list[tuple[int, int]], by: list[tuple[int, int]]) -> float:
        parts = [gx[:, _in_ranges(w, bx)[:-1]].ravel(), gy[_in_ranges(h, by)[:-1], :].ravel()]
        return float(np.concatenate(parts).mean())

    if not xs and not ys:
        return float("nan")
    return energy(xs, ys) / max(energy(_midway(xs, w), _midway(ys, h)), 1e-6)


def _peak(profile: np.ndarray, lines: list[int], reach: int) -> float:
    """max over ``lines`` of profile[line] / median(profile[line - reach: line + reach])."""
    worst = 0.0
    for c in lines:
        lo, hi = max(0, c - reach), min(len(profile), c + reach + 1)
        worst = max(worst, float(profile[c] / max(np.median(profile[lo:hi]), 1e-6)))
    return worst


def seam_peak(image: np.ndarray, tiles: list[Tile], reach: int = 48) -> float:
    """The sharpest seam line: for every column (row) inside a vertical (horizontal) overlap
    band, the mean gradient magnitude across it, averaged along the whole image, over the
    median of the columns (rows) within ``reach`` px. A tile edge pasted hard (or a feathered
    band that still steps) stands out of its neighbourhood as one column; a seamless render
    stays within the noise of the texture (~1.1). Complements ``seam_contrast``, which sees
    a band that differs as a whole (colour, contrast) but dilutes one sharp line."""
    img = image.astype(np.float32)
    xs, ys = overlap_bands(tiles)
    if not xs and not ys:
        return float("nan")
    px = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))  # (W-1,): across each column boundary
    py = np.abs(np.diff(img, axis=0)).mean(axis=(1, 2))  # (H-1,)
    cols = [c for a, b in xs for c in range(max(0, a - 1), min(len(px), b))]
    rows = [r for a, b in ys for r in range(max(0, a - 1), min(len(py), b))]
    return max(_peak(px, cols, reach), _peak(py, rows, reach))
