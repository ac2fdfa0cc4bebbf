"""Edge-aware upsampling with a guided filter, for renders made at a working resolution.

He, Sun & Tang 2010, "Guided Image Filtering" (ECCV; TPAMI 2013): inside every window the
output is modelled as a linear function of the guide, ``q = A I + b``; ``A`` and ``b`` minimise
``sum (A I + b - p)^2 + eps |A|^2`` over the window, and each pixel averages the models of the
windows that cover it. With a colour guide ``A`` is 3x3 per window (Sec. 3.5 of the paper).

He & Sun 2015, "Fast Guided Filter" (arXiv:1505.00996): when the input ``p`` only exists at a
low resolution, fit ``A`` and ``b`` there (guide = the low-resolution content) and upsample
the averaged coefficients bilinearly; applying them to the full-resolution guide puts the
content's edges and fine detail back into the upsampled result, while the stylization's own
colours and strokes keep the scale they were made at.

Tensors are (B, 3, H, W) RGB in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.engine.images import fit_size

DEFAULT_RADIUS = 2  # window radius in low-resolution pixels
DEFAULT_EPS = 1e-3  # regularisation on the [0, 1] scale: larger = smoother, less of the guide's detail


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of x (B, C, H, W) over (2r+1)^2 windows, renormalised at the borders."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)  # (B, C, H, W)


def guided_coefficients(guide: torch.Tensor, src: torch.Tensor, r: int,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-averaged linear models ``(A, b)`` with ``src ~ A guide + b``.

    ``guide`` (B, 3, h, w), ``src`` (B, C, h, w) -> A (B, C, 3, h, w), b (B, C, h, w).
    """
    g, s = guide.double(), src.double()
    b_, c, h, w = s.shape
    mean_i = box_mean(g, r)  # (B, 3, h, w)
    mean_p = box_mean(s, r)  # (B, C, h, w)
    ii = (g[:, :, None] * g[:, None]).reshape(b_, 9, h, w)  # (B, 9, h, w)
    ip = (s[:, :, None] * g[:, None]).reshape(b_, 3 * c, h, w)  # (B, C*3, h, w)
    var_i = box_mean(ii, r).reshape(b_, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None]  # (B, 3, 3, h, w)
    cov_ip = box_mean(ip, r).reshape(b_, c, 3, h, w) - mean_p[:, :, None] * mean_i[:, None]  # (B, C, 3, h, w)
    eye = torch.eye(3, dtype=g.dtype, device=g.device).view(1, 3, 3, 1, 1)
    sigma = (var_i + eps * eye).permute(0, 3, 4, 1, 2)  # (B, h, w, 3, 3)
    a = torch.linalg.solve(sigma, cov_ip.permute(0, 3, 4, 2, 1))  # (B, h, w, 3, C): sigma^-1 cov^T
    a = a.permute(0, 4, 3, 1, 2)  # (B, C, 3, h, w)
    b = mean_p - (a * mean_i[:, None]).sum(2)  # (B, C, h, w)
    a_mean = box_mean(a.reshape(b_, c * 3, h, w), r)  # (B, C*3, h, w)
    return a_mean.reshape(b_, c, 3, h, w).float(), box_mean(b, r).float()


def guided_upsample(src_lo: torch.Tensor, guide_lo: torch.Tensor, guide_hi: torch.Tensor,
                    r: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS, keep_residual: bool = True) -> torch.Tensor:
    """Upsample ``src_lo`` (B, C, h, w) to the size of ``guide_hi`` (B, 3, H, W), edge-aware.

    ``guide_lo`` (B, 3, h, w) is the guide at ``src_lo``'s resolution (what the network saw).
    The guided filter explains ``src_lo`` by the content; what it cannot explain (the
    strokes and texture the style adds) is the residual ``src_lo - (A guide_lo + b)``. With
    ``keep_residual`` that residual is upsampled bicubically and added back: the content's
    edges come from the full-size guide, the strokes keep their look, and at equal sizes the
    result is ``src_lo`` itself. Without it the strokes are smoothed away (plain fast guided
    filter). Returns (B, C, H, W), clamped to [0, 1].
    """
    a, b = guided_coefficients(guide_lo, src_lo, r, eps)  # (B, C, 3, h, w), (B, C, h, w)
    bsz, c, _, h, w = a.shape
    size = guide_hi.shape[-2:]
    up = lambda t, mode="bilinear": F.interpolate(t, size=size, mode=mode, align_corners=False)  # noqa: E731
    a_hi = up(a.reshape(bsz, c * 3, h, w)).reshape(bsz, c, 3, *size)  # (B, C, 3, H, W)
    q = (a_hi * guide_hi[:, None]).sum(2) + up(b)  # (B, C, H, W)
    if keep_residual:
        residual = src_lo - ((a * guide_lo[:, None]).sum(2) + b)  # (B, C, h, w)
        q = q + up(residual, "bicubic")  # (B, C, H, W)
    return q.clamp(0, 1)


def working_size(out_wh: tuple[int, int], stroke_size: int | None) -> tuple[int, int] | None:
    """(w, h) a network should run at for a ``stroke_size`` (its longest side), or None when that
    is the output size itself (no stroke size, or one at least as large as the output)."""
    if stroke_size is None or stroke_size >= max(out_wh):
        return None
    return fit_size(*out_wh, stroke_size)


__all__ = ["box_mean", "guided_coefficients", "guided_upsample", "working_size"]
