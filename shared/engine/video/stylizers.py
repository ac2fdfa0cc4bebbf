"""Frame stylizers: the feed-forward networks of ``fast`` and ``adain`` on batches of video frames.

A ``FrameStylizer`` takes (B, H, W, 3) uint8 RGB frames and returns (B, H, W, 3) float32 RGB in
[0, 1]. Built once per output (a style, a mix, a style image) and reused for every frame: the
network is loaded once, AdaIN's style statistics are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shared.engine.context import EngineContext
from shared.engine.device import autocast, inference_dtype, pick_device
from shared.engine.images import crop_to
from shared.engine.methods import adain, fast
from shared.engine.nets.vgg import load_vgg19
from shared.engine.video.coherent import FrameStylizer
from shared.jobs.specs import StyleRef


def _to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)  # (B, H, W, 3) uint8
    return x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)


def _to_numpy(y: torch.Tensor) -> np.ndarray:
    return y.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()  # (B, H, W, 3)


def fast_stylizer(
    model_ref: str, weights: dict[int, float], ctx: EngineContext, strength: float = 1.0,
    preserve_color: bool = False,
) -> FrameStylizer:
    """One style (or a normalized mix) of a CIN model (``shared.engine.methods.fast``)."""
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    model = fast.load_fast_model(model_ref, ctx, device)
    vec = fast.style_vector(model, weights)  # (S,)

    def stylize(frames: np.ndarray) -> np.ndarray:
        x = _to_tensor(frames, device)  # (B, 3, H, W)
        y = fast.stylize_tensor(model.net, x, vec, dtype)  # (B, 3, H, W)
        if preserve_color:
            y = fast.preserve_color(y, x)
        return _to_numpy(fast.blend_strength(y, x, strength))

    return stylize


def adain_stylizer(
    model_ref: str, styles: Sequence[StyleRef], ctx: EngineContext, alpha: float = 1.0, style_size: int = 512,
) -> FrameStylizer:
    """AdaIN with the (weighted) statistics of ``styles`` (``shared.engine.methods.adain``)."""
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    decoder, vgg_weights = adain.load_decoder(model_ref, ctx, device)
    vgg = load_vgg19(vgg_weights, device)
    with torch.inference_mode():
        stats = [
            adain.style_stats(ctx.read_input(s.image), ctx.read_input(s.mask) if s.mask else None, style_size,
                              vgg, device, dtype, None, f"style {i + 1}")
            for i, s in enumerate(styles)
        ]
    weights = [s.weight for s in styles]

    def stylize(frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = _to_tensor(frames, device)  # (B, 3, H, W)
            feat = adain._encode(vgg, x, device, dtype)  # (B, 512, h, w)
            t = adain._target(feat, stats, weights, None, alpha)  # (B, 512, h, w)
            with autocast(device, dtype):
                out = decoder(t.contiguous(memory_format=torch.channels_last))  # (B, 3, 8h, 8w)
            y = crop_to(out.float(), (x.shape[-2], x.shape[-1]))  # (B, 3, H, W)
        return _to_numpy(y)

    return stylize
