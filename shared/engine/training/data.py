"""The training data pipeline both trainers share: random crops from a flat folder of images.

Each image is decoded once, its shorter side resized to ``ceil(RESIZE_FACTOR * image_size)``,
and kept as uint8 in memory while the cache budget allows (a few thousand small images fit
easily); every sample is a random ``image_size`` crop, randomly flipped, drawn with the
trainer's own ``torch.Generator`` so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.engine.images import decode_image
from shared.errors import InvalidImage, InvalidSpec
from shared.imaging import IMAGE_SUFFIXES

RESIZE_FACTOR = 1.15  # shorter side resized to this x image_size before the random crop
DEFAULT_CACHE_BYTES = 2 << 30  # per dataset


class ImageFolder:
    """Random crops from a flat folder of images, decoded and resized once, cached as uint8.

    Image ``i`` is decoded on first use and kept in memory (3, h, w) uint8 with its shorter
    side ``short_side`` while the cache stays under ``cache_bytes``; past that, images are
    decoded again each time they are drawn. Unreadable files are skipped (with a warning).
    """

    def __init__(self, folder: Path, short_side: int, what: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidSpec(f"{what}: {folder} is not a folder of images")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise InvalidImage(f"{what}: {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self.short_side = short_side
        self.what = what
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self._cache: dict[int, torch.Tensor] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> torch.Tensor | None:
        if i in self._cache:
            return self._cache[i]
        if i in self._bad:
            return None
        try:
            img = decode_image(self.paths[i].read_bytes(), what=f"{self.what} {self.paths[i].name}")
        except (InvalidImage, OSError) as exc:
            warnings.warn(f"skipping {self.paths[i]}: {getattr(exc, 'detail', exc)}", stacklevel=2)
            self._bad.add(i)
            if len(self._bad) == len(self.paths):
                raise InvalidImage(f"{self.what}: none of the {len(self.paths)} files is a readable image") from None
            return None
        w, h = img.size
        scale = self.short_side / min(w, h)
        size = (max(self.short_side, round(w * scale)), max(self.short_side, round(h * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, h, w) uint8
        if self.cached_bytes + arr.numel() <= self.cache_bytes:
            self._cache[i] = arr
            self.cached_bytes += arr.numel()
        return arr

    def batch(self, n: int, crop: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random crops, randomly flipped: (n, 3, crop, crop) uint8 (see ``to_unit``)."""
        out = torch.empty(n, 3, crop, crop, dtype=torch.uint8)  # (n, 3, crop, crop)
        k = 0
        while k < n:
            i = int(torch.randint(len(self.paths), (1,), generator=gen))
            img = self._load(i)
            if img is None:
                continue
            _, h, w = img.shape
            y = int(torch.randint(h - crop + 1, (1,), generator=gen))
            x = int(torch.randint(w - crop + 1, (1,), generator=gen))
            patch = img[:, y : y + crop, x : x + crop]  # (3, crop, crop)
            if bool(torch.rand(1, generator=gen) < 0.5):
                patch = patch.flip(-1)
            out[k] = patch
            k += 1
        return out  # (n, 3, crop, crop) uint8


def crop_source(folder: Path, image_size: int, what: str) -> ImageFolder:
    """The ``ImageFolder`` a trainer draws ``image_size`` crops from (shorter sides resized once)."""
    return ImageFolder(folder, math.ceil(image_size * RESIZE_FACTOR), what)


def to_unit(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 crops -> float [0, 1] on ``device``, channels_last (moved as uint8: 4x less to copy)."""
    x = batch.to(device).float().div_(255.0)  # (B, 3, S, S)
    return x.contiguous(memory_format=torch.channels_last)
