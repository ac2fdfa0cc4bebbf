"""Images for the end-to-end tests, made from pictures scikit-image ships."""

from __future__ import annotations

import pytest
from PIL import Image

from shared.imaging import png_bytes


def _photo(name: str, size: tuple[int, int]) -> bytes:
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    return png_bytes(img.resize(size, Image.BILINEAR))


@pytest.fixture(scope="session")
def content_png() -> bytes:
    """128x96 (4:3) content image."""
    return _photo("astronaut", (128, 96))


@pytest.fixture(scope="session")
def style_png() -> bytes:
    return _photo("coffee", (96, 64))

