"""Reference implementations the engine is measured against, written from the papers'
and the reference repositories' *descriptions* (no code copied, nothing imported from
``shared.engine``'s networks or losses; only the same weights are loaded into them):

- ``TransformerNet``: Johnson, Alahi & Fei-Fei 2016, "Perceptual Losses for Real-Time Style
  Transfer and Super-Resolution" (ECCV), as pytorch/examples' fast_neural_style describes
  it: reflection-padded convolutions with bias, instance norm with a learned affine
  (Ulyanov et al. 2016) after every convolution but the last, 9x9 - 3x3/2 - 3x3/2 in,
  five residual blocks, nearest-upsample + 3x3 conv twice, 9x9 out.
- ``VGGEncoder``: Simonyan & Zisserman 2015's VGG19 feature stack (3x3 convs, ReLU, 2x2
  max-pools), built up to the deepest layer a method needs.
- ``adain_pipeline``: Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with
  Adaptive Instance Normalization" (ICCV), as naoto0804/pytorch-AdaIN describes it: VGG19
  encoder cut at relu4_1, AdaIN (Eq. 8) with the style's channel mean/std, the mirrored
  decoder; the style is encoded on every call.
- ``GatysLoop``: Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional
  Neural Networks" (CVPR): content MSE + Gram-matrix style MSE + total variation, pixels
  optimized by L-BFGS with exactly one loss evaluation (forward + backward) per iteration
  (no line search), as neural-style-pt runs it.

Everything runs plainly: fp32, NCHW, eager, ``torch.no_grad`` where no gradient is needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# --- Johnson et al. 2016 -------------------------------------------------------------------


class _Conv(nn.Module):
    """Reflection pad k//2, conv (with bias), optional instance norm with affine, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, norm: bool = True, relu: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.pad, self.upsample, self.relu = k // 2, upsample, relu
        self.conv = nn.Conv2d(c_in, c_out, k, stride)
        self.norm = nn.InstanceNorm2d(c_out, affine=True) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # (B, C, 2H, 2W)
        x = self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))  # (B, C_out, H', W')
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network with configurable widths.

    ``channels`` (32, 64, 128) and ``up`` (64, 32) are the paper's; ``sigmoid_out`` maps the
    output to [0, 1] (Dumoulin et al.'s convention, so its output compares with the engine's).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128), n_res: int = 5, up: Sequence[int] = (64, 32),
                 norm_last: bool = True, sigmoid_out: bool = True) -> None:
        super().__init__()
        c = list(channels)
        self.down = nn.ModuleList([_Conv(3, c[0], 9)] + [_Conv(a, b, 3, 2) for a, b in itertools.pairwise(c)])
        self.res = nn.ModuleList([nn.ModuleList([_Conv(c[-1], c[-1], 3), _Conv(c[-1], c[-1], 3, relu=False)])
                                  for _ in range(n_res)])
        ups = [c[-1], *up]
        self.up = nn.ModuleList([_Conv(a, b, 3, upsample=True) for a, b in itertools.pairwise(ups)])
        self.out = _Conv(ups[-1], 3, 9, norm=norm_last, relu=False)
        self.sigmoid_out = sigmoid_out

    def layers(self) -> list[_Conv]:
        """All conv layers in forward order."""
        return [*self.down, *(m for pair in self.res for m in pair), *self.up, self.out]  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.down:
            x = layer(x)
        for pair in self.res:
            x = x + pair[1](pair[0](x))  # type: ignore[index]
        for layer in self.up:
            x = layer(x)
        x = self.out(x)
        return torch.sigmoid(x) if self.sigmoid_out else x


def load_transformer_weights(net: TransformerNet, convs: list[torch.Tensor], gammas: list[torch.Tensor],
                             betas: list[torch.Tensor]) -> TransformerNet:
    """Same weights: conv kernels in forward order (biases zero: a norm follows each), and one
    style's instance-norm affine per layer."""
    layers = net.layers()
    if not len(layers) == len(convs) == len(gammas) == len(betas):
        raise ValueError("weight lists do not match the network's layers")
    with torch.no_grad():
        for layer, w, g, b in zip(layers, convs, gammas, betas, strict=True):
            layer.conv.weight.copy_(w)
            assert layer.conv.bias is not None
            layer.conv.bias.zero_()
            if layer.norm is not None:
                layer.norm.weight.copy_(g)
                layer.norm.bias.copy_(b)
    return net.eval().requires_grad_(False)


# --- VGG19 ----------------------------------------------------------------------------------

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def vgg_layer_names() -> list[str]:
    names, block, i = [], 1, 1
    for v in _VGG19:
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 1
        else:
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            i += 1
    return names


class VGGEncoder(nn.Module):
    """VGG19 features up to ``last`` (e.g. relu4_1), with the weights' own preprocessing:
    ``x = (rgb or bgr) * scale - mean`` then ``/ std``."""

    def __init__(self, last: str, weights: list[tuple[torch.Tensor, torch.Tensor]], bgr: bool,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        names = vgg_layer_names()
        self.names = names[: names.index(last) + 1]
        mods: list[nn.Module] = []
        c_in, wi = 3, 0
        for name in self.names:
            if name.startswith("conv"):
                w, b = weights[wi]
                conv = nn.Conv2d(c_in, w.shape[0], 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(w)
                    conv.bias.copy_(b)
                mods.append(conv)
                c_in, wi = w.shape[0], wi + 1
            elif name.startswith("relu"):
                mods.append(nn.ReLU(inplace=False))
            else:
                mods.append(nn.MaxPool2d(2, 2))
        self.body = nn.ModuleList(mods)
        self.bgr = bgr
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, rgb01: torch.Tensor, wanted: Sequence[str]) -> dict[str, torch.Tensor]:
        x = rgb01.flip(1) if self.bgr else rgb01  # (B, 3, H, W)
        x = (x - self.mean) / self.std
        out = {}
        for name, mod in zip(self.names, self.body, strict=True):
            x = mod(x)
            if name in wanted:
                out[name] = x
        return out


# --- AdaIN ------------------------------------------------------------------------------------


class AdainDecoder(nn.Module):
    """The mirrored VGG decoder of Huang & Belongie 2017 (Sec. 6.1): reflection-padded 3x3 convs,
    nearest 2x upsampling where the encoder pools, no normalization."""

    PLAN: ClassVar[list] = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U",
                            (128, 128), (128, 64), "U", (64, 64), (64, 3)]

    def __init__(self, kernels: list[tuple[torch.Tensor, torch.Tensor]], upsample: str = "nearest") -> None:
        super().__init__()
        self.upsample = upsample
        self.convs = nn.ModuleList()
        for step in self.PLAN:
            if step != "U":
                self.convs.append(nn.Conv2d(step[0], step[1], 3))  # type: ignore[index]
        with torch.no_grad():
            for conv, (w, b) in zip(self.convs, kernels, strict=True):
                conv.weight.copy_(w)  # type: ignore[union-attr]
                conv.bias.copy_(b)  # type: ignore[union-attr]
        self.eval().requires_grad_(False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x, ci = t, 0
        for step in self.PLAN:
            if step == "U":
                x = F.interpolate(x, scale_factor=2, mode=self.upsample)
                continue
            x = self.convs[ci](F.pad(x, (1, 1, 1, 1), mode="reflect"))
            ci += 1
            if ci < len(self.convs):
                x = F.relu(x)
        return x


def _mean_std(f: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(f, dim=(2, 3), keepdim=True, correction=1)  # (B, C, 1, 1)
    return mean, (var + eps).sqrt()


def adain_pipeline(encoder: VGGEncoder, decoder: AdainDecoder, content01: torch.Tensor, style01: torch.Tensor,
                   alpha: float = 1.0) -> torch.Tensor:
    """content (1, 3, H, W) with sides multiple of 8, style (1, 3, h, w), both in [0, 1] -> (1, 3, H, W)."""
    with torch.no_grad():
        fc = encoder(content01, ["relu4_1"])["relu4_1"]  # (1, 512, H/8, W/8)
        fs = encoder(style01, ["relu4_1"])["relu4_1"]  # (1, 512, h/8, w/8): encoded on every call
        c_mean, c_std = _mean_std(fc)
        s_mean, s_std = _mean_std(fs)
        t = (fc - c_mean) / c_std * s_std + s_mean  # (1, 512, H/8, W/8), Eq. 8
        t = alpha * t + (1 - alpha) * fc
        return decoder(t)  # (1, 3, H, W)


# --- Gatys et al. 2016 -------------------------------------------------------------------------


def gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)  # (B, C, C)


class GatysLoop:
    """Content + style + TV loss of pixels on the 0-255 scale, optimized with one evaluation per iteration.

    Loss (Gatys et al. 2016; layer lists and weights as given): ``cw * mean_l MSE(F_l(x), F_l(c)) +
    sw * mean_l MSE(G_l(x), G_l(s)) + tw * TV(x)``, ``G = F F^T / (C H W)``, TV the mean squared
    neighbour difference.
    """

    def __init__(self, encoder: VGGEncoder, content01: torch.Tensor, style01: torch.Tensor,
                 content_layers: Sequence[str], style_layers: Sequence[str], weights: tuple[float, float, float],
                 optimizer: str = "lbfgs", lr: float = 1.0) -> None:
        self.encoder, self.cl, self.sl = encoder, list(content_layers), list(style_layers)
        self.cw, self.sw, self.tw = weights
        with torch.no_grad():
            fc = encoder(content01, self.cl)
            fs = encoder(style01, self.sl)
        self.c_t = {k: fc[k] for k in self.cl}
        self.s_t = {k: gram(fs[k]) for k in self.sl}
        self.x = (content01 * 255.0).clone().requires_grad_(True)  # (1, 3, H, W)
        if optimizer == "lbfgs":
            self.opt: torch.optim.Optimizer = torch.optim.LBFGS([self.x], lr=1.0, max_iter=1, history_size=50)
        else:
            self.opt = torch.optim.Adam([self.x], lr=lr)
        self.evaluations = 0
        self.last_loss = float("nan")

    def loss(self, x255: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x255 / 255.0, self.cl + self.sl)
        c = sum(F.mse_loss(f[k], t) for k, t in self.c_t.items()) / len(self.c_t)
        s = sum(F.mse_loss(gram(f[k]), t) for k, t in self.s_t.items()) / len(self.s_t)
        tv = ((x255[..., 1:, :] - x255[..., :-1, :]) ** 2).mean() + ((x255[..., 1:] - x255[..., :-1]) ** 2).mean()
        return self.cw * c + self.sw * s + self.tw * tv  # type: ignore[return-value]

    def closure(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        total = self.loss(self.x)
        total.backward()
        self.evaluations += 1
        self.last_loss = float(total.detach())
        return total

    def step(self) -> float:
        if isinstance(self.opt, torch.optim.LBFGS):
            self.opt.step(self.closure)  # max_iter=1, no line search: exactly one evaluation
        else:
            self.closure()
            self.opt.step()
        with torch.no_grad():
            self.x.clamp_(0.0, 255.0)
        return self.last_loss
