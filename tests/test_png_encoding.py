"""The PNG encoder every result goes through (``shared.imaging.encode_png``): lossless, read
by the decoders clients use, and no larger than Pillow's on a stylized picture; with ISA-L's
deflate and with zlib's."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.imaging import encode_png, png_bytes


@pytest.fixture(params=["isal", "zlib"], autouse=True)
def deflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with both deflaters: ISA-L (the worker's) and zlib (where isal is missing)."""
    if request.param == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setitem(__import__("sys").modules, "isal", None)  # import isal: ImportError
    # the zlib header's level bits tell which one deflated (ISA-L writes 78 5E, zlib level 1 78 01)
    idat = encode_png(np.zeros((2, 2, 3), np.uint8))[41:43]
    assert idat == (b"\x78\x5e" if request.param == "isal" else b"\x78\x01"), idat
    return str(request.param)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (7, 13, 3), (5, 3), (97, 64, 3), (40, 33)])
def test_given_any_8bit_rgb_or_grey_array_when_encoded_expect_the_same_pixels_back(shape: tuple) -> None:
    # given random pixels (the worst case for the filter) of odd sizes, one pixel included
    a = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    # when encoded, and read back by Pillow and by OpenCV
    data = png_bytes(a)
    by_pillow = np.asarray(Image.open(io.BytesIO(data)))
    import cv2

    by_cv2 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a.ndim == 3:
        by_cv2 = by_cv2[:, :, ::-1]
    # expect exactly the pixels, in the same mode
    assert np.array_equal(by_pillow, a)
    assert np.array_equal(by_cv2, a)


def test_given_pil_images_when_encoded_expect_rgb_and_grey_fast_path_and_other_modes_kept() -> None:
    # given an RGB, a grey and an RGBA image
    rgb = Image.fromarray(np.arange(60, dtype=np.uint8).reshape(4, 5, 3))
    grey = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    # when encoded
    out = {img.mode: Image.open(io.BytesIO(png_bytes(img))) for img in (rgb, grey, rgba)}
    # expect each mode kept with its pixels (RGBA through Pillow, alpha included)
    for mode, src in (("RGB", rgb), ("L", grey), ("RGBA", rgba)):
        assert out[mode].mode == mode
        assert np.array_equal(np.asarray(out[mode]), np.asarray(src))


def test_given_a_stylized_picture_when_encoded_expect_no_larger_than_pillow_and_flat_areas_small() -> None:
    # given a textured picture (noise over a gradient, like a stylization) and a flat one
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 200, 256, dtype=np.float32)[None, :, None]  # (1, W, 1)
    textured = np.clip(ramp + rng.normal(0, 20, (256, 256, 3)), 0, 255).astype(np.uint8)
    flat = np.full((256, 256, 3), 90, np.uint8)
    # when encoded by ours and by Pillow at its level 1
    ours = len(encode_png(textured))
    buf = io.BytesIO()
    Image.fromarray(textured).save(buf, format="PNG", compress_level=1)
    # expect ours no more than 5 % larger, and a flat picture a tiny file
    assert ours <= 1.05 * len(buf.getvalue())
    assert len(encode_png(flat)) < 2_000


def test_given_a_wrong_shape_when_encoded_expect_a_clear_error() -> None:
    with pytest.raises(ValueError, match="encode_png takes"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
