"""Image files without the engine: what counts as an image file, and PNG encoding.

Torch-free (Pillow and numpy are imported only to encode), so the job specs, the API, the
worker, the CLI, the tests and the benchmarks all use these; ``shared.engine.images`` holds
the engine's decoding and tensor conversions.
"""

from __future__ import annotations

import io
from typing import Any

#: File name endings that count as images: dataset members (archive or storage prefix),
#: files of a training folder. Sorted, so ``str.endswith`` takes it and messages list it.
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def png_bytes(image_or_array: Any) -> bytes:
    """PNG bytes of a PIL image, or of an array ``Image.fromarray`` takes ((H, W) or (H, W, 3) uint8)."""
    from PIL import Image

    if isinstance(image_or_array, Image.Image):
        img = image_or_array
    else:
        import numpy as np

        img = Image.fromarray(np.asarray(image_or_array))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
