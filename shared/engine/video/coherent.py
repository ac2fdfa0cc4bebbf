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
    y_t = L(b_t) + (s_t - L(s_t))

``s_t`` the network's stylization of input frame t, ``W_t`` the backward warp (bicubic) by DIS
flow of the INPUT frames (t -> t-1), ``m_t`` Ruder's occlusion mask (forward-backward
consistency and motion boundaries), feathered so its edges leave no seam, ``c`` the coherence
(0 = per-frame stylization) and ``L`` a Gaussian low-pass (sigma ``DETAIL_SIGMA`` px).

The blend ``b`` is an exponential moving average of the network's output along the motion. A
network's strokes are only partly consistent from one frame to the next, and averaging partly
uncorrelated strokes draws double, ghosted strokes and lowers their contrast: blending whole
frames, the Gram style loss of the frames rose by 40-90 % for a 30-45 % flicker cut (measured
with ``bench/flicker.py``). So only the coarse band is carried over time (where a stroke is,
its colour and shading: most of what flickers), and the fine band (the strokes' texture, finer
than ``DETAIL_SIGMA``) is the network's own for frame t (our choice of band split; Ruder et al.
and Chen et al. blend whole frames or whole feature maps). Averaging still lowers the coarse
band's contrast where the two frames' strokes disagree; with ``restore_contrast`` (used for
``adain``) the blended coarse band's local std (window sigma ``CONTRAST_SIGMA``) is raised back
to the network's own for frame t (never lowered; our choice). Measured on a 256 px clip
(``bench/flicker.py``): ``fast`` at c = 0.6, flicker 0.66x of per-frame at 0.88x its style loss
(restoring contrast there raised its style loss); ``adain`` with a strongly textured style at
c = 0.7 with the contrast restored, flicker 0.77x at 1.07x the style loss (without: 0.79x / 1.12x
at c = 0.6; most of adain's flicker is in the fine strokes, which stay new).

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

FEATHER_PX = 2
#: Detail finer than this (Gaussian sigma, px) is always the network's own for the frame.
DETAIL_SIGMA = 1.5
#: The window (Gaussian sigma, px) over which the coarse band's local contrast is restored.
CONTRAST_SIGMA = 8.0
#: At most this much contrast is given back (the blend of two uncorrelated frames at 0.5 lowers it by 1/sqrt(2)).
MAX_CONTRAST_GAIN = 2.0


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


def _low(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), DETAIL_SIGMA)  # (H, W, 3)


def _restore_contrast(low_b: np.ndarray, low_s: np.ndarray) -> np.ndarray:
    """``low_b`` with its local contrast (std around the local mean, Gaussian window of sigma
    ``CONTRAST_SIGMA``) raised back to ``low_s``'s where the blend lowered it (gain 1 to
    ``MAX_CONTRAST_GAIN``; never lowered): (H, W, 3) -> (H, W, 3)."""
    mean_b, mean_s = _window(low_b), _window(low_s)  # (H, W, 3)
    var_b = np.maximum(_window((low_b - mean_b) ** 2), 1e-6)  # (H, W, 3)
    var_s = _window((low_s - mean_s) ** 2)  # (H, W, 3)
    gain = np.clip(np.sqrt(var_s / var_b), 1.0, MAX_CONTRAST_GAIN)  # (H, W, 3)
    return mean_b + (low_b - mean_b) * gain


def _window(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), CONTRAST_SIGMA)  # (H, W, 3)


def blend_sequence(
    stylized: Sequence[np.ndarray], pairs: Sequence[FramePair | None], coherence: float,
    previous: np.ndarray | None = None, restore_contrast: bool = False,
) -> list[np.ndarray]:
    """The coherent outputs (H, W, 3) float32 in [0, 1] of per-frame stylizations ``stylized``
    (same shape), online: each uses only the output before it. ``pairs[t]`` links input frame
    t-1 to t (``pairs[0]`` links ``previous``'s input to the first frame, or is None);
    ``restore_contrast``: give the coarse band back the local contrast the blend took from it."""
    out: list[np.ndarray] = []
    prev = previous
    for s, pair in zip(stylized, pairs, strict=True):
        if prev is None or pair is None or coherence <= 0:
            y = s.astype(np.float32)
        else:
            m = coherence * _feather(pair.mask)  # (H, W, 1)
            s = s.astype(np.float32)
            b = m * pair.warp_previous(prev) + (1.0 - m) * s  # (H, W, 3)
            low_s = _low(s)  # (H, W, 3)
            low_b = _restore_contrast(_low(b), low_s) if restore_contrast else _low(b)  # (H, W, 3)
            y = (low_b + (s - low_s)).astype(np.float32)  # (H, W, 3): coarse band carried, detail new
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
