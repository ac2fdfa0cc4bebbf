"""Clips made here, never downloaded: for the tests, the demo and the flicker benchmark.

* ``shapes_frames``: moving shapes (a disc, a square, a bar) over a textured background.
* ``camera_frames``: a moving virtual camera (pan and zoom) over a real photo, with a second
  photo's cut-out crossing it: real image content with real motion and occlusions, for the
  flicker benchmark (there is no real video clip offline).
* ``write_clip``: frames (+ a sine tone as the audio track) as mp4 (H.264 + AAC), webm
  (VP9 + Opus) or animated GIF bytes.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image


def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colourful texture (H, W, 3) uint8: sums of random sinusoids plus fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.uniform(0.01, 0.08, 2)
            img[..., c] += np.sin(fx * x * 2 * math.pi / 4 + fy * y * 2 * math.pi / 4 + rng.uniform(0, 6.3))
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    img = 0.7 * img + 0.3 * rng.random((height, width, 1), dtype=np.float32)
    return (img * 255).astype(np.uint8)


def shapes_frames(width: int = 96, height: int = 64, frames: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Moving shapes over a textured background that pans slowly: (H, W, 3) uint8 each."""
    pad = width // 4
    bg = _texture(width + 2 * pad, height + 2 * pad, seed)
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for t in range(frames):
        s = t / max(1, frames - 1)
        ox = round(pad * s)
        f = bg[pad // 2 : pad // 2 + height, ox : ox + width].copy()
        cx, cy, r = width * (0.2 + 0.6 * s), height * 0.5 + height * 0.25 * math.sin(2 * math.pi * s), height * 0.18
        f[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = (230, 40, 40)
        sx, sy, half = width * (0.8 - 0.5 * s), height * 0.3, height * 0.12
        f[(abs(x - sx) < half) & (abs(y - sy) < half)] = (40, 60, 220)
        bx = int(width * ((0.1 + 0.9 * s) % 1.0))
        f[:, max(0, bx - 2) : bx + 2] = (250, 240, 90)
        out.append(f)
    return out


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3].astype(np.uint8)


def camera_frames(
    width: int = 256, height: int = 192, frames: int = 48, photo: np.ndarray | str = "astronaut",
    sprite: np.ndarray | str = "chelsea",
) -> list[np.ndarray]:
    """A virtual camera panning and zooming in over ``photo`` (an array or a scikit-image sample
    name) while a cut-out of ``sprite`` (an ellipse) moves across the picture: (H, W, 3) uint8 each."""
    src = _photo(photo) if isinstance(photo, str) else photo
    spr = _photo(sprite) if isinstance(sprite, str) else sprite
    sh, sw = src.shape[:2]
    spr_h = height // 3
    spr_w = int(spr_h * spr.shape[1] / spr.shape[0])
    spr_img = np.asarray(Image.fromarray(spr).resize((spr_w, spr_h), Image.Resampling.LANCZOS))
    yy, xx = np.mgrid[0:spr_h, 0:spr_w]
    ell = ((xx - spr_w / 2) / (spr_w / 2)) ** 2 + ((yy - spr_h / 2) / (spr_h / 2)) ** 2 < 1.0
    base = min(sw / width, sh / height) * 0.8  # source pixels per output pixel at the start
    out = []
    for t in range(frames):
        s = t / max(1, frames - 1)
        zoom = 1.0 - 0.25 * s  # zoom in
        cw, ch = width * base * zoom, height * base * zoom
        cx = sw * (0.4 + 0.2 * s)
        cy = sh * (0.45 + 0.05 * math.sin(math.pi * s))
        cx = min(max(cx, cw / 2), sw - cw / 2)  # the crop stays inside the photo
        cy = min(max(cy, ch / 2), sh - ch / 2)
        box = (max(0.0, cx - cw / 2), max(0.0, cy - ch / 2), min(sw, cx + cw / 2), min(sh, cy + ch / 2))
        frame = np.asarray(
            Image.fromarray(src).resize((width, height), Image.Resampling.BILINEAR, box=box)
        ).copy()
        px = round(-spr_w + (width + spr_w) * s)
        py = round(height * 0.55 - spr_h / 2 + height * 0.1 * math.sin(2 * math.pi * s))
        x0, x1 = max(0, px), min(width, px + spr_w)
        y0, y1 = max(0, py), min(height, py + spr_h)
        if x1 > x0 and y1 > y0:
            m = ell[y0 - py : y1 - py, x0 - px : x1 - px]
            region = frame[y0:y1, x0:x1]
            region[m] = spr_img[y0 - py : y1 - py, x0 - px : x1 - px][m]
        out.append(frame)
    return out


def write_clip(
    frames: list[np.ndarray], fps: Fraction | int = 24, fmt: str = "mp4", tone_hz: float | None = 440.0,
    sample_rate: int = 44100,
) -> bytes:
    """Encode ``frames`` as ``fmt`` ("mp4": H.264 + AAC, "webm": VP9 + Opus, "gif": animated GIF,
    no audio); with a sine tone of ``tone_hz`` lasting as long as the frames (None: silent, no track)."""
    fps = Fraction(fps)
    buf = io.BytesIO()
    if fmt == "gif":  # Pillow writes the animated GIF (delays in ms; no audio in a GIF)
        images = [Image.fromarray(f) for f in frames]
        images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return buf.getvalue()
    height, width = frames[0].shape[:2]
    codec, pix, audio_codec = {
        "mp4": ("libx264", "yuv420p", "aac"),
        "webm": ("libvpx-vp9", "yuv420p", "libopus"),
    }[fmt]
    with av.open(buf, mode="w", format=fmt) as out:
        vs: Any = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, pix
        tb = Fraction(1, 1) / fps
        if fmt == "webm":
            vs.options = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}
        astream: Any = None
        if tone_hz and audio_codec:
            sample_rate = 48000 if audio_codec == "libopus" else sample_rate
            astream = out.add_stream(audio_codec, rate=sample_rate)
            astream.layout = "mono"
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts = i
            frame.time_base = tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if astream is not None and tone_hz:
            n = round(len(frames) / float(fps) * sample_rate)
            t = np.arange(n) / sample_rate
            wave = (0.3 * np.sin(2 * math.pi * tone_hz * t)).astype(np.float32)
            step = 1024
            for k in range(0, n, step):
                chunk = wave[None, k : k + step]  # (1, samples)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = k
                af.time_base = Fraction(1, sample_rate)
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return buf.getvalue()
