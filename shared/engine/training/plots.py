"""The loss-curve plot both trainers attach to their result, drawn with Pillow (no matplotlib)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from shared.imaging import png_bytes


def loss_curve_png(
    history: torch.Tensor, title: str = "AdaIN decoder training", width: int = 800, height: int = 450
) -> bytes:
    """A log-scale plot of the total, content and weighted style losses per step.

    ``history`` (N, 3): total, content and lambda * style per step. Curves are smoothed with a
    moving average over ~1 % of the steps.
    """
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 20, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 8), title, fill="black")
    n = int(history.shape[0])
    if n == 0:
        draw.text((left + 10, top + 10), "no steps yet", fill="black")
    else:
        data = history.double().clamp_min(1e-12).log10()  # (N, 3)
        k = max(1, n // 100)
        if k > 1:
            kernel = torch.ones(1, 1, k, dtype=data.dtype) / k
            padded = F.pad(data.T.unsqueeze(1), (k - 1, 0), mode="replicate")  # (3, 1, N + k - 1)
            data = F.conv1d(padded, kernel).squeeze(1).T  # (N, 3)
        lo, hi = float(data.min()), float(data.max())
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        step = max(1, n // (right - left))
        xs = list(range(0, n, step))

        def px(i: int, v: float) -> tuple[float, float]:
            x = left + (right - left) * (i / max(1, n - 1))
            y = bottom - (bottom - top) * ((v - lo) / (hi - lo))
            return x, y

        series = (("total", "black"), ("content", "royalblue"), ("lambda*style", "crimson"))
        for col, (name, colour) in enumerate(series):
            pts = [px(i, float(data[i, col])) for i in xs]
            if len(pts) == 1:
                pts = pts * 2
            draw.line(pts, fill=colour, width=2)
            draw.text((right - 260 + 90 * col, top + 6), name, fill=colour)
        for e in range(math.floor(lo), math.ceil(hi) + 1):
            if lo <= e <= hi:
                _, y = px(0, e)
                draw.line([(left - 5, y), (left, y)], fill="black")
                draw.text((8, y - 6), f"1e{e}", fill="black")
        draw.text((left, bottom + 8), "step 1", fill="black")
        draw.text((right - 80, bottom + 8), f"step {n}", fill="black")
    return png_bytes(img)
