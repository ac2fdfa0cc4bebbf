"""Perceptual losses on VGG feature maps, shared by every method.

- Gram matrices and the style loss of Gatys, Ecker & Bethge 2016, "Image Style Transfer
  Using Convolutional Neural Networks" (CVPR): ``G = F F^T / (C * H * W)``.
- Masked Gram matrices for spatial control, Gatys et al. 2017, "Controlling Perceptual
  Factors in Neural Style Transfer" (CVPR): features are multiplied by the mask (resized to
  the layer) and the Gram matrix is normalized by the mask's area ``C * sum(mask)``, so a
  region's Gram has the same scale as an unmasked one whatever the region's size.
- Channel mean/std (with a masked variant) for the AdaIN style loss, Huang & Belongie 2017,
  "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization" (ICCV).
- Total variation, a smoothness prior on the output pixels (Mahendran & Vedaldi 2015).

All functions take batched tensors and are dtype-agnostic; callers that run VGG under
autocast cast features to fp32 before calling them (sums of squares overflow bf16 precision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def resize_mask(mask: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """A (B|1, 1, H, W) mask in [0, 1] resized to a feature map's (h, w) by area averaging.

    Area averaging (adaptive average pooling) is the right filter for the large downscales
    between the image and deep VGG layers: a thin region keeps its share of the layer.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if tuple(mask.shape[-2:]) == (h, w):
        return mask
    if mask.shape[-2] >= h and mask.shape[-1] >= w:
        return F.adaptive_avg_pool2d(mask, (h, w))  # (B, 1, h, w)
    return F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)  # (B, 1, h, w)


def gram_matrix(feat: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Gram matrix of ``feat`` (B, C, H, W) -> (B, C, C).

    Without a mask: ``F F^T / (C H W)``. With a mask (B|1, 1, H', W') in [0, 1], resized to
    (H, W): the features are multiplied by the mask and the result divided by ``C * sum(mask)``
    instead of ``C * H * W``; a mask of ones gives exactly the unmasked Gram.
    """
    _, c, h, w = feat.shape
    if mask is None:
        return _gram(feat) / (c * h * w)  # (B, C, C)
    m = resize_mask(mask.to(feat.dtype), (h, w))  # (B|1, 1, H, W)
    area = m.reshape(m.shape[0], -1).sum(dim=1).clamp_min(eps)  # (B|1,)
    return _gram(feat * m) / (c * area).view(-1, 1, 1)  # (B, C, C)


def _gram(feat: torch.Tensor) -> torch.Tensor:
    """``F F^T`` of ``feat`` (B, C, H, W) -> (B, C, C), read in the layout it is stored in.

    The engine's networks run channels_last, where (B, C, HW) is not a view: reshaping copied
    every feature map, and its backward copied the gradient back (8 % of a 512 px Gatys
    evaluation). Channels-last maps are read as (B, HW, C) instead, which is a view, and
    ``F^T F`` of that is the same Gram."""
    b, c, h, w = feat.shape
    if c > 1 and feat.is_contiguous(memory_format=torch.channels_last) and not feat.is_contiguous():
        rows = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C), a view
        return torch.bmm(rows.transpose(1, 2), rows)  # (B, C, C)
    flat = feat.reshape(b, c, h * w)  # (B, C, HW)
    return torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)


def content_loss(feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps (B, C, H, W) (scalar)."""
    return F.mse_loss(feat, target)


def gram_loss(gram: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Gram matrices (B, C, C) and (1|B, C, C) (scalar)."""
    return (gram - target).pow(2).mean()


def style_loss(
    feats: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
    layer_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Gram style loss summed over the layers of ``targets``.

    ``feats``: {layer: (B, C, H, W)}; ``targets``: {layer: (1|B, C, C)} Gram targets;
    ``mask``: optional (B|1, 1, H, W) region on the generated image (see ``gram_matrix``),
    or ``{layer: mask}`` already resized to each layer (saves the resize in a loop);
    ``layer_weights``: per-layer factors, default ``1 / number of layers`` (Gatys et al.).
    """
    if not targets:
        raise ValueError("style_loss needs at least one target layer")
    total: torch.Tensor | None = None
    for layer, target in targets.items():
        weight = layer_weights[layer] if layer_weights is not None else 1.0 / len(targets)
        m = mask[layer] if isinstance(mask, Mapping) else mask
        term = weight * gram_loss(gram_matrix(feats[layer], m), target)
        total = term if total is None else total + term
    assert total is not None  # targets is not empty (checked above)
    return total


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels of ``x`` (B, C, H, W) (scalar)."""
    dh = x[..., 1:, :] - x[..., :-1, :]  # (B, C, H-1, W)
    dw = x[..., :, 1:] - x[..., :, :-1]  # (B, C, H, W-1)
    return dh.pow(2).mean() + dw.pow(2).mean()


def mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``feat`` (B, C, H, W) -> ((B, C, 1, 1), (B, C, 1, 1)).

    ``std = sqrt(var + eps)`` with the population variance (divide by H*W), which the masked
    variant shares so that a mask of ones gives the same numbers.
    """
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)  # (B, C, HW)
    mean = flat.mean(dim=2)  # (B, C)
    var = flat.var(dim=2, unbiased=False)  # (B, C)
    return mean.view(b, c, 1, 1), (var + eps).sqrt().view(b, c, 1, 1)


def masked_mean_std(
    feat: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``feat`` (B, C, H, W) over a region.

    ``mask`` (B|1, 1, H', W') in [0, 1] is resized to (H, W) and used as pixel weights:
    ``mean = sum(m f) / sum(m)``, ``var = sum(m (f - mean)^2) / sum(m)``.
    Returns ((B, C, 1, 1), (B, C, 1, 1)).
    """
    h, w = feat.shape[-2:]
    m = resize_mask(mask.to(feat.dtype), (h, w))  # (B|1, 1, H, W)
    area = m.sum(dim=(2, 3), keepdim=True).clamp_min(1e-8)  # (B|1, 1, 1, 1)
    mean = (feat * m).sum(dim=(2, 3), keepdim=True) / area  # (B, C, 1, 1)
    var = ((feat - mean).pow(2) * m).sum(dim=(2, 3), keepdim=True) / area  # (B, C, 1, 1)
    return mean, (var + eps).sqrt()


__all__ = [
    "content_loss",
    "gram_loss",
    "gram_matrix",
    "masked_mean_std",
    "mean_std",
    "resize_mask",
    "style_loss",
    "total_variation",
]
