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


#: zlib level of every PNG we write. Level 1 instead of Pillow's 6: a 512 px stylized result
#: encodes in ~19 ms of CPU instead of ~73 ms for a 13 % larger file (bench/service.py: the encode
#: was the largest part of a 512 px ``fast`` job's overhead outside the engine).
PNG_COMPRESS_LEVEL = 1


def png_bytes(image_or_array: Any) -> bytes:
    """PNG bytes of a PIL image, or of an array ``Image.fromarray`` takes ((H, W) or (H, W, 3) uint8)."""
    from PIL import Image

    if isinstance(image_or_array, Image.Image):
        img = image_or_array
    else:
        import numpy as np

        img = Image.fromarray(np.asarray(image_or_array))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()
