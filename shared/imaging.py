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


class PngRowWriter:
    """A PNG written row band by row band, never holding the whole image (the assembly of a
    giant tiled render): 8-bit RGB, every row with the PNG "Sub" filter, one zlib stream
    split into IDAT chunks (PNG spec, W3C 2003, sections 9.2 and 11.2).

    ``write(rows)`` takes (h, width, 3) uint8 arrays top to bottom; ``close()`` checks that
    exactly ``height`` rows came and ends the file.
    """

    def __init__(self, path: Any, width: int, height: int, level: int = 6) -> None:
        import struct
        import zlib

        self._struct, self._zlib = struct, zlib
        self.width, self.height, self.rows = width, height, 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._z = zlib.compressobj(level)
        self._file.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._file.write(self._struct.pack(">I", len(data)) + kind + data)
        self._file.write(self._struct.pack(">I", self._zlib.crc32(kind + data) & 0xFFFFFFFF))

    def write(self, rows: Any) -> None:
        import numpy as np

        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.ndim != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"rows must be (h, {self.width}, 3) uint8, got {rows.shape}")
        if self.rows + rows.shape[0] > self.height:
            raise ValueError("more rows than the image has")
        sub = rows.copy()
        sub[:, 1:] -= rows[:, :-1]  # Sub filter: each byte minus the same channel of the pixel on its left
        filtered = np.concatenate([np.ones((rows.shape[0], 1), np.uint8), sub.reshape(rows.shape[0], -1)], axis=1)
        data = self._z.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self.rows += rows.shape[0]

    def close(self) -> None:
        if self.rows != self.height:
            self._file.close()
            raise ValueError(f"PNG got {self.rows} rows of {self.height}")
        self._chunk(b"IDAT", self._z.flush())
        self._chunk(b"IEND", b"")
        self._file.close()
