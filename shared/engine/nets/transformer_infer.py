"""Inference plan of a ``CINTransformer``: the same function, with convolutions a CPU runs faster.

The ``fast`` network's thin full-resolution layers run far below the machine's convolution
peak (``bench/fast_peak.py``: a 9x9 conv 4->3 at 512 px reaches ~20 % of it, a 3x3 conv 8->4
~25 %), because oneDNN cannot vectorize over 3-8 channels. Two rewrites change the layout of
those layers, not their arithmetic (outputs agree with the eager module to fp32 rounding,
>100 dB PSNR; ``tests/engine/test_fast_plan.py``):

- **Sub-pixel upsampling** (Shi et al. 2016, "Real-Time Single Image and Video
  Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR): a
  nearest-neighbour 2x upsample, a reflection pad of 1 and a 3x3 convolution equal a
  replicate pad of 1 at the low resolution, a 3x3 convolution with four times the output
  channels (one set per output phase) and a pixel shuffle. (Reflecting the upsampled image by
  one pixel repeats its first row, which is the low-resolution first row: a replicate pad
  there.) The upsampled tensor is never built, and the convolution has 4x the channels at a
  quarter of the pixels.
- **Space-to-depth** for the last 9x9 convolution (few output channels): a stride-1 k x k
  convolution equals a pixel unshuffle by 2, a ceil((k+1)/2)-tap convolution with 4x the input
  and output channels, and a pixel shuffle. It does ~25 % more multiply-adds (zero taps) in a
  shape oneDNN runs 2x faster.

What is *not* done, and why: folding the conditional instance norm into the convolution
weights, as batch norm is folded at inference. CIN normalizes with the mean and variance of
*each image's* activations (Dumoulin et al. 2017, eq. 5), which are only known after the
convolution ran on that image; only the style's affine ``gamma``/``beta`` is fixed per job,
and a per-channel affine followed by a ReLU cannot move into the next convolution either (the
ReLU sits between, and reflection padding would need the shift too). The norm stays a
separate (memory-bound) pass with its affine: for one image, ``F.group_norm`` with one group
per channel (the same statistics, 20-25 % faster than ``F.batch_norm`` on channels-last bf16 at
16+ channels) and, for the 3-channel output layer, batch norm on an NCHW copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from shared.engine.context import cancel_point
from shared.engine.nets.transformer import CINTransformer, ConvCIN, ResidualBlock

#: A 9x9 (or larger) stride-1 conv with at most this many output channels runs space-to-depth.
S2D_MAX_OUT = 8
#: From this many channels, one image's instance norm runs as group norm (one group per channel).
GROUP_NORM_MIN_CHANNELS = 16


def pad_channels_last(x: torch.Tensor, p: int, mode: str = "reflect") -> torch.Tensor:
    """``F.pad(x, (p,) * 4, mode)`` of (B, C, H, W) for ``reflect`` or ``replicate``, channels-last
    out, by slice copies.

    ATen's reflection-pad kernel walks channels-last bf16 tensors 4-5x slower than a copy
    (32 x 512 x 512: 3.9 ms vs 0.9 ms, ``bench/fast_peak.py``). Exactly ATen's values.
    """
    b, c, h, w = x.shape
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"mode must be reflect or replicate, got {mode!r}")
    if x.device.type != "cpu":  # measured on CPUs only; on a GPU seven copies are seven kernel launches
        return F.pad(x, (p,) * 4, mode=mode) if p else x
    if p == 0 or (mode == "reflect" and (p >= h or p >= w)):
        return x if p == 0 else F.pad(x, (p,) * 4, mode=mode)  # ATen's own error for a too-small input
    out = torch.empty((b, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)  # (B, C, H + 2p, W + 2p)
    out[:, :, p : p + h, p : p + w] = x
    for i in range(p):  # rows above and below, from the interior
        top, bottom = (p + 1 + i, p + h - 2 - i) if mode == "reflect" else (p, p + h - 1)
        out[:, :, p - 1 - i, p : p + w] = out[:, :, top, p : p + w]
        out[:, :, p + h + i, p : p + w] = out[:, :, bottom, p : p + w]
    for j in range(p):  # then columns of the padded rows (the corners come with them)
        left, right = (p + 1 + j, p + w - 2 - j) if mode == "reflect" else (p, p + w - 1)
        out[:, :, :, p - 1 - j] = out[:, :, :, left]
        out[:, :, :, p + w + j] = out[:, :, :, right]
    return out


def subpixel_weight(w: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) of "nearest 2x, reflect pad 1, conv 3x3" -> (4 C_out, C_in, 3, 3) at low resolution.

    Output pixel (2i + a, 2j + b) reads the upsampled padded image at rows 2i + a + u, u = 0..2,
    which is low-resolution (replicate-padded) row i + (a + u + 1) // 2; taps landing on the same
    low-resolution pixel add up. Channel order is pixel shuffle's: c * 4 + a * 2 + b.
    """
    c_out, c_in, k, _ = w.shape
    if k != 3:
        raise ValueError(f"sub-pixel rewrite expects a 3x3 kernel, got {k}x{k}")
    out = w.new_zeros(c_out, 2, 2, c_in, 3, 3)  # (C_out, a, b, C_in, 3, 3)
    for a in range(2):
        for b in range(2):
            for u in range(3):
                for v in range(3):
                    out[:, a, b, :, (a + u + 1) // 2, (b + v + 1) // 2] += w[:, :, u, v]
    return out.reshape(c_out * 4, c_in, 3, 3)


def space_to_depth_weight(w: torch.Tensor, r: int = 2) -> torch.Tensor:
    """(C_out, C_in, k, k) stride-1 kernel -> (r^2 C_out, r^2 C_in, q, q), q = ceil((k + r - 1) / r).

    Output phase (a, b) of the unshuffled grid reads input phase (ry, rx) at tap (qy, qx) with
    the original tap (r qy + ry - a, r qx + rx - b) when that lies inside the kernel, else zero.
    Channel orders are pixel (un)shuffle's: c * r^2 + phase_y * r + phase_x.
    """
    c_out, c_in, k, _ = w.shape
    q = (k + r - 2) // r + 1
    out = w.new_zeros(c_out, r, r, c_in, r, r, q, q)  # (C_out, a, b, C_in, ry, rx, qy, qx)
    for a in range(r):
        for b in range(r):
            for ry in range(r):
                for rx in range(r):
                    for qy in range(q):
                        for qx in range(q):
                            u, v = r * qy + ry - a, r * qx + rx - b
                            if 0 <= u < k and 0 <= v < k:
                                out[:, a, b, :, ry, rx, qy, qx] = w[:, :, u, v]
    return out.reshape(c_out * r * r, c_in * r * r, q, q)


@dataclass(frozen=True)
class _Step:
    """One ConvCIN layer's convolution in the plan: ``kind`` plain | subpixel | s2d."""

    layer: ConvCIN
    kind: str
    weight: torch.Tensor  # rewritten kernel, in the plan's dtype, channels_last


class InferencePlan:
    """A frozen ``CINTransformer``'s forward for inference in ``dtype`` on ``device``.

    ``plan(image, style_weights)``: (B, 3, H, W) with H, W multiples of ``net.config.multiple``
    (and at least ``min_side``), same contract as ``CINTransformer.forward``; returns fp32
    (B, 3, H, W) in [0, 1]. Call under ``torch.inference_mode``. The plan copies the
    convolution weights at build time: rebuild it after the weights change.
    """

    def __init__(self, net: CINTransformer, dtype: torch.dtype, device: torch.device | str) -> None:
        self.net = net
        self.dtype = dtype

        def prepared(w: torch.Tensor) -> torch.Tensor:
            return w.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

        def step(layer: ConvCIN) -> _Step:
            w = layer.conv.weight.detach().float()  # (C_out, C_in, k, k)
            k, stride = w.shape[-1], layer.conv.stride[0]
            if layer.upsample and k == 3 and stride == 1:
                return _Step(layer, "subpixel", prepared(subpixel_weight(w)))
            if not layer.upsample and k >= 5 and stride == 1 and w.shape[0] <= S2D_MAX_OUT:
                return _Step(layer, "s2d", prepared(space_to_depth_weight(w)))
            return _Step(layer, "plain", prepared(w))

        self.contract = [step(cast(ConvCIN, layer)) for layer in net.contract]
        blocks = [cast(ResidualBlock, blk).layers for blk in net.res]
        self.res = [(step(cast(ConvCIN, pair[0])), step(cast(ConvCIN, pair[1]))) for pair in blocks]
        self.expand = [step(cast(ConvCIN, layer)) for layer in net.expand]

    @staticmethod
    def _conv(s: _Step, x: torch.Tensor) -> torch.Tensor:
        if s.kind == "subpixel":
            x = pad_channels_last(x, 1, "replicate")  # (B, C_in, h + 2, w + 2)
            return F.pixel_shuffle(F.conv2d(x, s.weight), 2)  # (B, 4 C_out, h, w) -> (B, C_out, 2h, 2w)
        x = pad_channels_last(x, s.layer.pad, "reflect")  # (B, C_in, H + 2p, W + 2p)
        if s.kind == "s2d":
            x = F.conv2d(F.pixel_unshuffle(x, 2), s.weight)  # (B, 4 C_in, H/2 + p, ..) -> (B, 4 C_out, H/2, W/2)
            return F.pixel_shuffle(x, 2)  # (B, C_out, H, W)
        return F.conv2d(x, s.weight, None, s.layer.conv.stride)  # (B, C_out, H', W')

    @staticmethod
    def _norm_one(s: _Step, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Conditional instance norm of ONE image (1, C, H, W), on a CPU by the fastest equal ATen kernel:
        group norm with one group per channel (the same statistics) for channels-last tensors of
        16+ channels, 20-25 % faster than batch norm there; batch norm on an NCHW copy for the
        last 3-channel layer, where channels-last kernels are 5x slower (``bench/fast_peak.py``)."""
        norm = s.layer.norm
        if "forward" in norm.__dict__ or x.device.type != "cpu":
            # patched for this block (tiled renders replay whole-image statistics), or on a GPU,
            # where the kernel choice below was not measured: the module's own batch-norm path
            return norm(x, w)
        gamma, beta = norm.affine(w)  # (1, C) each, fp32
        c = x.shape[1]
        if c >= GROUP_NORM_MIN_CHANNELS:
            return F.group_norm(x, c, gamma[0], beta[0], norm.eps)  # (1, C, H, W)
        return F.batch_norm(x.contiguous(), None, None, weight=gamma[0], bias=beta[0], training=True,
                            momentum=0.0, eps=norm.eps)  # (1, C, H, W), NCHW

    def _layer(self, s: _Step, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self._conv(s, x)  # (B, C_out, H', W')
        if x.shape[0] == 1:
            x = self._norm_one(s, x, w)
        elif x.is_contiguous():
            x = s.layer.norm(x, w)
        else:  # a channels-last batch: one fused batch-norm pass per image beats the generic var_mean path 3x
            x = torch.cat([s.layer.norm(x[i : i + 1], w[i : i + 1]) for i in range(x.shape[0])])
        return F.relu(x, inplace=True) if s.layer.relu else x

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        w = style_weights if style_weights.dim() == 2 else style_weights.unsqueeze(0).expand(b, -1)  # (B, S)
        if w.shape != (b, self.net.n_styles):
            raise ValueError(f"style_weights must be ({self.net.n_styles},) or ({b}, {self.net.n_styles})")
        m = self.net.config.multiple
        if image.shape[-2] % m or image.shape[-1] % m:
            raise ValueError(f"image sides must be multiples of {m}, got {tuple(image.shape[-2:])}")
        x = image.to(self.dtype, memory_format=torch.channels_last)  # (B, 3, H, W), one copy
        for s in self.contract:
            x = self._layer(s, x, w)  # (B, C_i, H / 2^i, W / 2^i)
            cancel_point()
        for s1, s2 in self.res:
            x = x + self._layer(s2, self._layer(s1, x, w), w)  # (B, C, H / m, W / m)
            cancel_point()
        for s in self.expand:
            x = self._layer(s, x, w)  # last: (B, 3, H, W)
            cancel_point()
        return torch.sigmoid(x.float())  # (B, 3, H, W) in [0, 1]
