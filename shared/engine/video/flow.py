"""Optical flow between consecutive input frames, warping, and occlusion masks.

The flow is OpenCV's DIS (dense inverse search; Kroeger et al. 2016, "Fast Optical Flow using
Dense Inverse Search", ECCV) on grey frames. Occlusions follow Ruder, Dosovitskiy & Brox 2016,
"Artistic style transfer for videos" (GCPR; arXiv:1604.08610), Sec. 3.1: a pixel of frame t is
trusted when the backward flow (t -> t-1) and the forward flow (t-1 -> t) taken at the point it
lands on cancel out,

    |w_b + w_f(x + w_b)|^2  <=  0.01 (|w_b|^2 + |w_f(x + w_b)|^2) + 0.5,

and it does not sit on a motion boundary (|grad w_b|^2 <= 0.01 |w_b|^2 + 0.002). Everything else
(disoccluded regions, the edges of moving objects, pixels that came from outside the frame) is
occluded: there the previous stylized frame says nothing about frame t.

Arrays: frames (H, W, 3) uint8 RGB; flows (H, W, 2) float32 in pixels (dx, dy); masks (H, W)
float32 in [0, 1] (1 = trusted).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # (H, W) uint8


def dis_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) such that ``src(x) ~ dst(x + flow(x))`` (DIS, OpenCV)."""
    dis = cv2.DISOpticalFlow_create(_DIS_PRESET)
    return dis.calc(_gray(src), _gray(dst), None)  # (H, W, 2) float32


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(x) = image(x + flow(x))``, bicubic (bilinear blurs fine strokes at every warp), border
    pixels replicated; (H, W, C) any dtype -> same shape and dtype."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def occlusion_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) float32, 1 where frame t's pixel is visible in frame t-1 (Ruder et al. 2016, Sec. 3.1).

    ``backward``: flow t -> t-1 (H, W, 2); ``forward``: flow t-1 -> t (H, W, 2)."""
    h, w = backward.shape[:2]
    fw_at = warp(forward, backward)  # (H, W, 2): forward flow where each pixel of t lands in t-1
    diff = np.sum((backward + fw_at) ** 2, axis=-1)  # (H, W)
    mags = np.sum(backward**2, axis=-1) + np.sum(fw_at**2, axis=-1)  # (H, W)
    consistent = diff <= 0.01 * mags + 0.5
    du = np.gradient(backward[..., 0])
    dv = np.gradient(backward[..., 1])
    grad2 = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2  # (H, W)
    boundary = grad2 > 0.01 * np.sum(backward**2, axis=-1) + 0.002
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx, sy = gx + backward[..., 0], gy + backward[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    return (consistent & ~boundary & inside).astype(np.float32)


@dataclass(frozen=True)
class FramePair:
    """What frame t-1 tells about frame t: the backward flow and where it is trusted."""

    backward: np.ndarray  # (H, W, 2): flow t -> t-1
    mask: np.ndarray  # (H, W) float32 in [0, 1]

    def warp_previous(self, previous: np.ndarray) -> np.ndarray:
        """Frame t-1's image (H, W, C) moved onto frame t."""
        return warp(previous, self.backward)


def frame_pair(previous: np.ndarray, current: np.ndarray) -> FramePair:
    """Flow and occlusion mask between two consecutive input frames (H, W, 3) uint8."""
    backward = dis_flow(current, previous)  # (H, W, 2): current(x) ~ previous(x + backward)
    forward = dis_flow(previous, current)  # (H, W, 2)
    return FramePair(backward, occlusion_mask(backward, forward))
