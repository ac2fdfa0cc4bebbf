"""Colour preservation for style transfer (Gatys, Bethge, Hertzmann & Shechtman 2016,
"Preserving Color in Neural Artistic Style Transfer", arXiv:1606.05897).

Two methods from that note:

- *Luminance-only transfer*: stylize the luminance channel only, with the style's luminance
  first matched to the content's mean and std, then put the content's chroma back (YIQ).
- *Colour histogram matching*: before stylizing, transform the style image's colours with a
  linear map so their mean and covariance equal the content's. We use the symmetric square
  root form ``A = Sigma_c^{1/2} Sigma_s^{-1/2}`` ("image analogies" variant in the note).

Tensors are RGB in [0, 1], shape (B, 3, H, W); masks (B|1, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import torch

# NTSC YIQ, the colour space used in the paper.
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    m = matrix.to(device=x.device, dtype=x.dtype)  # (3, 3)
    return torch.einsum("ij,bjhw->bihw", m, x)  # (B, 3, H, W)


def rgb_to_yiq(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) YIQ."""
    return _apply(_RGB_TO_YIQ, rgb)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) YIQ -> (B, 3, H, W) RGB (not clamped)."""
    return _apply(_YIQ_TO_RGB, yiq)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma Y."""
    return rgb_to_yiq(rgb)[:, :1]


def grey_rgb(y: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma -> (B, 3, H, W) grey RGB image (what VGG sees in luminance mode)."""
    return y.expand(-1, 3, -1, -1).contiguous()


def _weighted_stats(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and covariance (C, C) of the pixels of x (1, C, H, W), optionally weighted."""
    c = x.shape[1]
    flat = x.reshape(c, -1)  # (C, N)
    if mask is None:
        w = torch.full((flat.shape[1],), 1.0 / flat.shape[1], dtype=x.dtype, device=x.device)  # (N,)
    else:
        m = torch.nn.functional.interpolate(mask.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
        w = m.reshape(-1)  # (N,)
        w = w / w.sum().clamp_min(1e-8)
    mean = flat @ w  # (C,)
    centered = flat - mean[:, None]  # (C, N)
    cov = (centered * w) @ centered.T  # (C, C)
    return mean, cov


def match_luminance(
    style_y: torch.Tensor, content_y: torch.Tensor, style_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Shift/scale style luma (1, 1, H, W) to the content luma's mean and std."""
    ms, vs = _weighted_stats(style_y, style_mask)
    mc, vc = _weighted_stats(content_y, None)
    scale = (vc.sqrt() / vs.sqrt().clamp_min(1e-4)).reshape(1, 1, 1, 1)
    return ((style_y - ms.reshape(1, 1, 1, 1)) * scale + mc.reshape(1, 1, 1, 1)).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False, eps: float = 1e-5) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov + eps * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))
    vals = vals.clamp_min(eps)
    power = -0.5 if inverse else 0.5
    return vecs @ torch.diag(vals.pow(power)) @ vecs.T  # (C, C)


def match_color(style: torch.Tensor, content: torch.Tensor, style_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Style RGB (1, 3, H, W) with its colour mean/covariance mapped onto the content's.

    ``style_mask`` restricts the statistics of the style to its white region (the whole
    style image is still transformed).
    """
    s64, c64 = style.double(), content.double()
    ms, cs = _weighted_stats(s64, style_mask)
    mc, cc = _weighted_stats(c64, None)
    a = _sqrtm(cc) @ _sqrtm(cs, inverse=True)  # (3, 3)
    out = torch.einsum("ij,bjhw->bihw", a, s64 - ms.view(1, 3, 1, 1)) + mc.view(1, 3, 1, 1)  # (1, 3, H, W)
    return out.clamp(0, 1).to(style.dtype)


def combine_luminance(y: torch.Tensor, content_rgb: torch.Tensor) -> torch.Tensor:
    """New luma (B, 1, H, W) with the content's chroma (B, 3, H, W) -> RGB in [0, 1]."""
    yiq = rgb_to_yiq(content_rgb)  # (B, 3, H, W)
    return yiq_to_rgb(torch.cat([y, yiq[:, 1:]], dim=1)).clamp(0, 1)  # (B, 3, H, W)


__all__ = [
    "combine_luminance",
    "grey_rgb",
    "luminance",
    "match_color",
    "match_luminance",
    "rgb_to_yiq",
    "yiq_to_rgb",
]
