"""Image decoding, validation and tensor conversion for the engine.

Decoding is defensive: a format allowlist, a pixel cap checked from the header before any
pixel is decoded (no decompression bombs), EXIF orientation applied, and every mode
(RGBA, LA, P, greyscale, 16-bit, CMYK) converted to RGB. Output sizes are given by the
longest side, keeping the aspect ratio; networks that need sides divisible by some factor
get reflection padding, removed again afterwards.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from shared.engine.device import to_device
from shared.errors import InvalidImage, InvalidMask
from shared.jobs.shapes import ASPECT_TOLERANCE, fit_size, mask_mismatch

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})
DEFAULT_MAX_PIXELS = 8192 * 8192  # Settings.max_pixels


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    if not data:
        raise InvalidImage(f"{what}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise InvalidImage(f"{what}: not a readable image ({type(exc).__name__})") from None
    if img.format not in ALLOWED_FORMATS:
        raise InvalidImage(f"{what}: format {img.format} is not allowed; use one of {sorted(ALLOWED_FORMATS)}")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImage(f"{what}: image has no pixels")
    if w * h > max_pixels:
        raise InvalidImage(f"{what}: {w}x{h} = {w * h} pixels is above the limit of {max_pixels}")
    try:
        img.load()
    except Exception as exc:
        raise InvalidImage(f"{what}: the image data is truncated or corrupt ({type(exc).__name__})") from None
    return ImageOps.exif_transpose(img)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image") -> Image.Image:
    """Bytes -> validated RGB image (EXIF orientation applied, alpha composited on white)."""
    img = _open(data, max_pixels, what)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return img.convert("RGB")


def decode_mask(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "mask") -> Image.Image:
    """Bytes -> single-channel mask ("L", 255 = region). Alpha counts where the mask has it."""
    try:
        img = _open(data, max_pixels, what)
    except InvalidImage as exc:
        raise InvalidMask(exc.detail) from None
    if img.mode in ("RGBA", "LA"):
        return img.getchannel("A")
    return img.convert("L")


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS if img.mode != "L" else Image.Resampling.BILINEAR)


def resize_max_side(img: Image.Image, max_side: int) -> Image.Image:
    return resize(img, fit_size(*img.size, max_side))


def to_tensor(img: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL RGB (or L) -> float tensor (1, C, H, W) in [0, 1]."""
    arr = np.array(img, dtype=np.uint8)  # (H, W, C) or (H, W): a writable copy of the pixels
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W) uint8, a view
    # one pass on the CPU, whose division is exact (CUDA's scalar division multiplies by the
    # reciprocal and can differ in the last bit): the same float32 quotients as numpy's
    return to_device(t.to(torch.float32).div_(255.0), device)


def to_image(t: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB."""
    if t.dim() == 4:
        t = t[0]
    arr = (t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def preview_image(x255: torch.Tensor, max_side: int) -> Image.Image:
    """A small picture of pixels being optimized: (1, 3, H, W) on the 0-255 scale -> PIL RGB
    with the longest side at most ``max_side`` (area-averaged, so it is cheap at any size)."""
    _, _, h, w = x255.shape
    x = x255.detach()
    if max(h, w) > max_side:
        pw, ph = fit_size(w, h, max_side)
        x = F.interpolate(x.float(), size=(ph, pw), mode="area")  # (1, 3, ph, pw)
    return to_image(x / 255.0)



def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) on the bottom/right so H and W divide by ``multiple``; returns original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect needs the pad to be smaller than the side
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)  # (B, C, H+ph, W+pw)


def crop_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x[..., : hw[0], : hw[1]]


def mask_tensor(mask: Image.Image, size_hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask -> (1, 1, H, W) float in [0, 1] at ``size_hw``."""
    m = to_tensor(mask.convert("L"), device)  # (1, 1, h, w)
    return F.interpolate(m, size=size_hw, mode="bilinear", align_corners=False).clamp(0, 1)


def check_mask_aspect(
    mask: Image.Image, content_size: tuple[int, int], what: str, tolerance: float = ASPECT_TOLERANCE
) -> None:
    """A content mask must have the content image's aspect ratio (any resolution); the API
    applies the same rule (``shared.jobs.shapes``) to the uploaded sizes before queueing."""
    problem = mask_mismatch(mask.size, content_size, what, tolerance)
    if problem:
        raise InvalidMask(problem)
