"""Image decoding and conversion: allowlist, pixel cap, EXIF, modes, sizes, masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.engine.images import (
    check_mask_aspect,
    crop_to,
    decode_image,
    decode_mask,
    fit_size,
    mask_tensor,
    pad_to_multiple,
    resize_max_side,
    to_image,
    to_tensor,
)
from shared.errors import InvalidImage, InvalidMask


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_allowed_formats_decode_to_rgb() -> None:
    img = Image.new("RGB", (10, 6), (200, 30, 40))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"):
        out = decode_image(_encode(img, fmt))
        assert out.mode == "RGB" and out.size == (10, 6), fmt


def test_formats_outside_the_allowlist_are_refused() -> None:
    # given a valid image in a format the farm does not accept (PPM)
    data = _encode(Image.new("RGB", (4, 4)), "PPM")
    # expect InvalidImage naming the format
    with pytest.raises(InvalidImage, match="format PPM is not allowed"):
        decode_image(data)


def test_garbage_and_empty_bytes_are_refused() -> None:
    with pytest.raises(InvalidImage, match="not a readable image"):
        decode_image(b"this is not an image at all")
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"")


def test_pixel_cap_is_checked_before_decoding() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(InvalidImage, match="above the limit"):
        decode_image(data, max_pixels=5000)


def test_exif_orientation_is_applied() -> None:
    # given a 20x10 JPEG tagged "rotate 90 CW" (orientation 6)
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 5, 10))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    # when decoded
    out = decode_image(data)
    # expect it upright: 10x20, the blue stripe now on top
    assert out.size == (10, 20)
    top = np.asarray(out)[1, 5]
    assert top[2] > 150 and top[0] < 100


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(_encode(img, "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_greyscale_cmyk_and_16_bit_become_rgb() -> None:
    grey = decode_image(_encode(Image.new("L", (5, 5), 128), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    cmyk = decode_image(_encode(Image.new("CMYK", (5, 5), (0, 255, 255, 0)), "JPEG"))
    r, g, b = cmyk.getpixel((2, 2))
    assert cmyk.mode == "RGB" and r > 200 and g < 60 and b < 60
    arr16 = (np.arange(25, dtype=np.uint16).reshape(5, 5) * 2000)
    img16 = Image.fromarray(arr16)  # mode I;16
    out16 = decode_image(_encode(img16, "PNG"))
    assert out16.mode == "RGB" and out16.getpixel((4, 4))[0] == 255


def test_fit_size_keeps_the_aspect_ratio() -> None:
    assert fit_size(1000, 500, 256) == (256, 128)
    assert fit_size(300, 600, 64) == (32, 64)
    assert fit_size(1000, 1, 32) == (32, 1)
    assert resize_max_side(Image.new("RGB", (90, 30)), 45).size == (45, 15)


def test_tensor_round_trip_and_padding() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8), "RGB")
    t = to_tensor(img)
    assert t.shape == (1, 3, 7, 9) and t.min() >= 0 and t.max() <= 1
    assert np.array_equal(np.asarray(to_image(t)), np.asarray(img))
    padded, hw = pad_to_multiple(t, 4)
    assert padded.shape[-2:] == (8, 12) and hw == (7, 9)
    assert torch.equal(crop_to(padded, hw), t)


def test_masks_use_alpha_and_resize() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 4, 8))
    mask = decode_mask(_encode(rgba, "PNG"))
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255 and mask.getpixel((7, 0)) == 0
    m = mask_tensor(mask, (4, 4))
    assert m.shape == (1, 1, 4, 4) and m[0, 0, 0, 0] == 1 and m[0, 0, 0, 3] == 0
    with pytest.raises(InvalidMask):
        decode_mask(b"nope")


def test_mask_aspect_must_match_the_content() -> None:
    check_mask_aspect(Image.new("L", (24, 20)), (48, 40), "regions[0].mask")  # same aspect, other size
    with pytest.raises(InvalidMask, match=r"regions\[0\]\.mask: aspect ratio 40x40"):
        check_mask_aspect(Image.new("L", (40, 40)), (48, 40), "regions[0].mask")
