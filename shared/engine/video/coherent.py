"""Temporally coherent stylization of a clip with a feed-forward network.

Frames stylized one by one shimmer: a feed-forward network answers small changes of its input
(noise, sub-pixel motion, exposure) with different strokes. Ruder, Dosovitskiy & Brox 2016,
"Artistic style transfer for videos" (GCPR; arXiv:1604.08610) tie each frame to the previous
stylized frame warped by the optical flow of the input video, only where the flow is trusted
(their short-term temporal loss with occlusion masks, Sec. 3.1-3.2). Chen, Liao, Lu, Yuan & Hua
2017, "Coherent Online Video Style Transfer" (ICCV; arXiv:1703.09211) do this for feed-forward
networks: they warp the previous frame's result with the flow and blend it with the new
frame's where the flow is reliable, and keep the network's output elsewhere, online (one frame
after the other, never looking ahead). We do the same at the output of any of our networks
(``fast`` with a style or a mix, ``adain`` with style images), with no training:

    b_t = m_t * (c * W_t(y_{t-1}) + (1 - c) * s_t) + (1 - m_t) * s_t
    y_t = R(b_t; s_t)

``s_t`` the network's stylization of input frame t, ``W_t`` the backward warp (bicubic) by DIS
flow of the INPUT frames (t -> t-1), ``m_t`` Ruder's occlusion mask (forward-backward
consistency and motion boundaries), feathered so its edges leave no seam, and ``c`` the
coherence (0 = per-frame stylization). ``b`` is an exponential moving average of the network's
strokes along the motion. A network's strokes are only partly consistent from one frame to
the next, and averaging partly uncorrelated strokes lowers their contrast: the style fades
(measured: the Gram style loss rises by half at c = 0.5). ``R`` gives the strokes their
energy back: in each band of a small Laplacian stack, the blend's band is scaled by the ratio
of the local (Gaussian-windowed) band energy of ``s_t`` to its own, so the output keeps the
temporally stable stroke pattern of ``b_t`` with the stroke contrast of the network's own
frame (our addition; ``bench/flicker.py`` measures both flicker and style loss).

Chunks: a clip split into chunks (``shared.engine.video.chunks``) starts each chunk a few
frames early (``overlap``); those warm-up frames build up ``y`` and are dropped, so the chain
is already in step when the chunk's first kept frame is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from shared.engine.video.flow import FramePair, frame_pair

#: (B, H, W, 3) uint8 RGB frames -> (B, H, W, 3) float32 RGB in [0, 1]
FrameStylizer = Callable[[np.ndarray], np.ndarray]

DEFAULT_COHERENCE = 0.35
FEATHER_PX = 2
#: Laplacian bands of the energy restoration (Gaussian sigmas, px) and the most one band is amplified.
BAND_SIGMAS = (0.7, 1.4, 2.8)
MAX_GAIN = 3.0


def frame_pairs(frames: Sequence[np.ndarray], check: Callable[[], None] = lambda: None) -> list[FramePair | None]:
    """Flow and mask from each input frame to the next ((None for the first)."""
    pairs: list[FramePair | None] = [None]
    for t in range(1, len(frames)):
        check()
        pairs.append(frame_pair(frames[t - 1], frames[t]))
    return pairs


def _feather(mask: np.ndarray) -> np.ndarray:
    """Shrink the trusted region by ``FEATHER_PX`` and soften its edge: (H, W) -> (H, W, 1)."""
    k = 2 * FEATHER_PX + 1
    eroded = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(eroded, (k, k), 0)[..., None]  # (H, W, 1)


def _bands(image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Laplacian stack of (H, W, 3): the bands (finest first) and the low-pass rest."""
    bands, cur = [], image
    for sigma in BAND_SIGMAS:
        low = cv2.GaussianBlur(cur, (0, 0), sigma)
        bands.append(cur - low)
        cur = low
    return bands, cur


def restore_energy(blend: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """``blend`` (H, W, 3) with, band by band, the local stroke energy of ``stylized`` (H, W, 3)."""
    b_bands, out = _bands(blend)
    s_bands, _ = _bands(stylized)
    for bb, sb, sigma in zip(b_bands, s_bands, BAND_SIGMAS, strict=True):
        window = max(2.0, 2.0 * sigma)
        e_b = np.sqrt(cv2.GaussianBlur(bb * bb, (0, 0), window) + 1e-7)  # (H, W, 3)
        e_s = np.sqrt(cv2.GaussianBlur(sb * sb, (0, 0), window) + 1e-7)  # (H, W, 3)
        out = out + bb * np.clip(e_s / e_b, 0.0, MAX_GAIN)
    return out


def blend_sequence(
    stylized: Sequence[np.ndarray], pairs: Sequence[FramePair | None], coherence: float,
    previous: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The coherent outputs (H, W, 3) float32 in [0, 1] of per-frame stylizations ``stylized``
    (same shape), online: each uses only the output before it. ``pairs[t]`` links input frame
    t-1 to t (``pairs[0]`` links ``previous``'s input to the first frame, or is None)."""
    out: list[np.ndarray] = []
    prev = previous
    for s, pair in zip(stylized, pairs, strict=True):
        if prev is None or pair is None or coherence <= 0:
            y = s.astype(np.float32)
        else:
            m = coherence * _feather(pair.mask)  # (H, W, 1)
            b = m * pair.warp_previous(prev) + (1.0 - m) * s  # (H, W, 3)
            y = restore_energy(b, s.astype(np.float32)).astype(np.float32)  # (H, W, 3)
        out.append(y)
        prev = y
    return out


def stylize_batched(
    frames: Sequence[np.ndarray], stylize: FrameStylizer, batch: int = 4, check: Callable[[], None] = lambda: None,
    on_batch: Callable[[int], None] = lambda n: None,
) -> list[np.ndarray]:
    """Per-frame stylization ((H, W, 3) float32 each), ``batch`` frames per network pass."""
    out: list[np.ndarray] = []
    for i in range(0, len(frames), batch):
        check()
        y = stylize(np.stack(frames[i : i + batch]))  # (B, H, W, 3)
        out.extend(y)
        on_batch(len(y))
    return out


def to_uint8(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
