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

- **Phase domain** (one image on a CPU): the output of a sub-pixel or space-to-depth
  convolution, (1, 4C, h, w) before its pixel shuffle, holds the four output phases of each
  channel c in channels 4c..4c+3, so the instance norm of the shuffled channel is group norm
  with C groups of four channels there (the same statistics, the affine repeated per phase),
  and the ReLU commutes with the shuffle. When the next layer is the space-to-depth one, whose
  input is ``pixel_unshuffle(reflect_pad(pixel_shuffle(y), p))``, that tensor is built from
  ``y`` directly (``phase_reflect_pad``: ``y`` is its interior for an even ``p``, the border
  rows and columns are copies of the right phase): the full-resolution 4-channel tensor, its
  norm, padding and two shuffles are never made (a 512 px forward 4-6 ms faster).
- **The input image** is converted and padded in NCHW, where both are plain copies, and made
  channels-last once (0.7 ms less than converting a 3-channel image to channels-last first).
- **Padding inside the convolution** for the large strided layer (``conv_reflect_padded``):
  oneDNN pads with zeros as it reads, and the output rows and columns that saw the zeros are
  recomputed from small reflect-padded strips; the padded copy of the full-resolution input
  is never made.

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

import itertools
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from shared.engine.context import cancel_point
from shared.engine.nets.transformer import CINTransformer, ConditionalInstanceNorm, ConvCIN, ResidualBlock

#: A 9x9 (or larger) stride-1 conv with at most this many output channels runs space-to-depth.
S2D_MAX_OUT = 8
#: A strided layer's input of at least this many elements pads in the convolution (``conv_reflect_padded``):
#: measured faster for 32 x 512 x 512 (7.1 vs 8.4 ms), slower for 32 x 256 x 256 and for stride 1.
STRIP_PAD_MIN_NUMEL = 4 << 20
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


def conv_reflect_padded(x: torch.Tensor, weight: torch.Tensor, stride: int, p: int) -> torch.Tensor:
    """``F.conv2d(F.pad(x, (p,) * 4, "reflect"), weight, stride=stride)`` without the padded copy.

    The convolution pads with zeros itself (oneDNN reads no padded tensor), then the few output
    rows and columns whose windows reach the padding are recomputed from small reflect-padded
    strips of ``x`` and written over. A stride-2 3x3 layer reads the padding in its first row
    and column only (even sides): at 512 px this replaces a 17 MB copy (1.7 ms) with two strips.
    Each strip holds the rows (columns) that reflection reads, so its own reflection is the
    image's. Exactly the padded convolution's values.
    """
    out = F.conv2d(x, weight, None, stride, p)  # (B, C_out, H', W'), zero padding
    k = weight.shape[-1]
    for dim in (2, 3):
        n, n_out = x.shape[dim], out.shape[dim]
        first = [i for i in range(n_out) if i * stride < p]  # windows over the leading padding
        last = [i for i in range(n_out) if i * stride + k - 1 - p >= n and i not in first]
        for run in (first, last):
            if not run:
                continue
            i0, i1 = run[0], run[-1] + 1
            lo, hi = max(0, i0 * stride - p), min(n, (i1 - 1) * stride + k - p)  # rows of x the windows read
            before, after = lo - (i0 * stride - p), (i1 - 1) * stride + k - p - hi
            strip = x.narrow(dim, lo, hi - lo)
            pads = (p, p, before, after) if dim == 2 else (before, after, p, p)
            fixed = F.conv2d(F.pad(strip, pads, mode="reflect"), weight, None, stride)
            out.narrow(dim, i0, i1 - i0).copy_(fixed)
    return out


def _reflect(i: int, n: int) -> int:
    """Index ``i`` in [-(n - 1), 2n - 2] reflected into [0, n) without repeating the edge (``F.pad`` reflect)."""
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


def phase_reflect_pad(y: torch.Tensor, p: int) -> torch.Tensor:
    """``pixel_unshuffle(F.pad(pixel_shuffle(y, 2), (p,) * 4, "reflect"), 2)`` for an even ``p``,
    without the full-resolution tensors.

    ``y`` (B, 4C, h, w) is the phase domain of X = pixel_shuffle(y) (B, C, 2h, 2w): channel
    4c + 2a + b holds X[c, 2i + a, 2j + b]. With q = p / 2 the result (B, 4C, h + 2q, w + 2q)
    has ``y`` as its interior; a border row (column) of phase a (b) is the row (column) of the
    same phase that reflection maps it to (an even shift keeps the parity). Channels-last out.
    """
    b, c4, h, w = y.shape
    if p % 2 or c4 % 4 or p >= 2 * min(h, w):
        raise ValueError(f"phase padding needs an even pad below the full-resolution side and 4C channels, "
                         f"got p={p} for {tuple(y.shape)}")
    q = p // 2
    out = torch.empty((b, c4, h + 2 * q, w + 2 * q), dtype=y.dtype, device=y.device,
                      memory_format=torch.channels_last)  # (B, 4C, h + 2q, w + 2q)
    out[:, :, q : q + h, q : q + w] = y
    v = out.permute(0, 2, 3, 1).view(b, h + 2 * q, w + 2 * q, c4 // 4, 2, 2)  # (B, I, J, C, a, b), a view
    border_rows = [*range(q), *range(q + h, h + 2 * q)]
    for i in border_rows:  # padded low-resolution row i, phase a: full-resolution row 2i + a - p
        for a in range(2):
            src = _reflect(2 * i + a - p, 2 * h)
            v[:, i, q : q + w, :, a, :] = v[:, q + src // 2, q : q + w, :, src % 2, :]
    for j in [*range(q), *range(q + w, w + 2 * q)]:  # then columns, over all rows (corners included)
        for bb in range(2):
            src = _reflect(2 * j + bb - p, 2 * w)
            v[:, :, j, :, :, bb] = v[:, :, q + src // 2, :, :, src % 2]
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


class StatsTape:
    """Each CIN layer's (mean, var) of one image, in layer order: recorded in one pass of the
    plan, replayed in another, so that every tile of a large render is normalised with the whole
    image's statistics (``shared.engine.methods.tiled``).

    ``StatsTape()`` records ((C,) fp32 CPU tensors, ``pairs``); ``StatsTape(pairs)`` replays them.
    Replaying computes CIN (Dumoulin et al. 2017, eq. 5) in fp32 with the given mean and variance.
    """

    def __init__(self, replay: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = list(replay) if replay is not None else []
        self.replaying = replay is not None
        self._next = 0

    def norm(self, norm: ConditionalInstanceNorm, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """``norm(x, style_weights)`` of ONE image (1, C, H, W), recording or replaying its statistics."""
        if x.shape[0] != 1:
            raise ValueError(f"a statistics tape follows one image, got a batch of {x.shape[0]}")
        if not self.replaying:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), correction=0)  # (1, C) each
            self.pairs.append((mean[0].cpu(), var[0].cpu()))
            return norm(x, style_weights)
        if self._next >= len(self.pairs):
            raise ValueError(f"the statistics tape holds {len(self.pairs)} layers; the network has more")
        mean, var = self.pairs[self._next]  # (C,) each
        self._next += 1
        return norm.with_statistics(x, mean, var, norm.affine(style_weights))  # (1, C, H, W)


@dataclass(frozen=True)
class _Step:
    """One ConvCIN layer's convolution in the plan: ``kind`` plain | subpixel | s2d."""

    layer: ConvCIN
    kind: str
    weight: torch.Tensor  # rewritten kernel, in the plan's dtype, channels_last
    index: int  # position among the plan's CIN layers (its slice of ``InferencePlan._affines``)


class InferencePlan:
    """A frozen ``CINTransformer``'s forward for inference in ``dtype`` on ``device``.

    ``plan(image, style_weights, stats=None)``: (B, 3, H, W) with H, W multiples of
    ``net.config.multiple`` (and at least ``min_side``), same contract as
    ``CINTransformer.forward``; returns fp32 (B, 3, H, W) in [0, 1]. ``stats``: a ``StatsTape``
    to record or replay one image's CIN statistics. Call under ``torch.inference_mode``. The
    plan copies the convolution weights at build time: rebuild it after the weights change.
    """

    def __init__(self, net: CINTransformer, dtype: torch.dtype, device: torch.device | str) -> None:
        self.net = net
        self.dtype = dtype

        def prepared(w: torch.Tensor) -> torch.Tensor:
            return w.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

        layers: list[ConvCIN] = []

        def step(layer: ConvCIN) -> _Step:
            layers.append(layer)
            w = layer.conv.weight.detach().float()  # (C_out, C_in, k, k)
            k, stride, i = w.shape[-1], layer.conv.stride[0], len(layers) - 1
            if layer.upsample and k == 3 and stride == 1:
                return _Step(layer, "subpixel", prepared(subpixel_weight(w)), i)
            if not layer.upsample and k >= 5 and stride == 1 and w.shape[0] <= S2D_MAX_OUT:
                return _Step(layer, "s2d", prepared(space_to_depth_weight(w)), i)
            return _Step(layer, "plain", prepared(w), i)

        self.contract = [step(cast(ConvCIN, layer)) for layer in net.contract]
        blocks = [cast(ResidualBlock, blk).layers for blk in net.res]
        self.res = [(step(cast(ConvCIN, pair[0])), step(cast(ConvCIN, pair[1]))) for pair in blocks]
        self.expand = [step(cast(ConvCIN, layer)) for layer in net.expand]
        # every layer's (S, C) style tables side by side: one mix per call instead of one per layer
        self._gammas = torch.cat([lay.norm.gamma.detach().float() for lay in layers], 1).to(device)  # (S, sum C)
        self._betas = torch.cat([lay.norm.beta.detach().float() for lay in layers], 1).to(device)  # (S, sum C)
        self._bounds = [0, *itertools.accumulate(lay.norm.gamma.shape[1] for lay in layers)]

    def _affines(self, w: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each CIN layer's (gamma, beta) (B, C) fp32 for the style mix ``w`` (B, S), as
        ``ConditionalInstanceNorm.affine`` computes them (an elementwise mix, not a bf16 matmul)."""
        sw = w.float().unsqueeze(-1)  # (B, S, 1)
        gammas, betas = (sw * self._gammas).sum(1), (sw * self._betas).sum(1)  # (B, sum C) each
        return [(gammas[:, a:b], betas[:, a:b]) for a, b in itertools.pairwise(self._bounds)]

    @staticmethod
    def _conv_phases(s: _Step, x: torch.Tensor) -> torch.Tensor:
        """A sub-pixel or space-to-depth step's convolution, before its pixel shuffle: (B, 4 C_out, h, w)."""
        if s.kind == "subpixel":
            x = pad_channels_last(x, 1, "replicate")  # (B, C_in, h + 2, w + 2)
            return F.conv2d(x, s.weight)  # (B, 4 C_out, h, w)
        x = pad_channels_last(x, s.layer.pad, "reflect")  # (B, C_in, H + 2p, W + 2p)
        return F.conv2d(F.pixel_unshuffle(x, 2), s.weight)  # (B, 4 C_in, H/2 + p, ..) -> (B, 4 C_out, H/2, W/2)

    @classmethod
    def _conv(cls, s: _Step, x: torch.Tensor) -> torch.Tensor:
        if s.kind != "plain":
            return F.pixel_shuffle(cls._conv_phases(s, x), 2)  # (B, C_out, H', W')
        stride = s.layer.conv.stride[0]
        if not x.is_contiguous(memory_format=torch.channels_last):  # NCHW: the input image (or a layer of
            # < 16 channels, normalised in NCHW): padded where that is a plain copy, then one channels-last copy
            x = F.pad(x, (s.layer.pad,) * 4, mode="reflect")  # (B, C_in, H + 2p, W + 2p)
            return F.conv2d(x.contiguous(memory_format=torch.channels_last), s.weight, None, stride)
        if stride > 1 and x.device.type == "cpu" and x.numel() >= STRIP_PAD_MIN_NUMEL:
            return conv_reflect_padded(x, s.weight, stride, s.layer.pad)  # (B, C_out, H', W')
        x = pad_channels_last(x, s.layer.pad, "reflect")  # (B, C_in, H + 2p, W + 2p)
        return F.conv2d(x, s.weight, None, stride)  # (B, C_out, H', W')

    @staticmethod
    def _norm_one(s: _Step, x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Conditional instance norm of ONE image (1, C, H, W) on a CPU by the fastest equal ATen kernel:
        group norm with one group per channel (the same statistics) for channels-last tensors of
        16+ channels, 20-25 % faster than batch norm there; batch norm on an NCHW copy for the
        last 3-channel layer, where channels-last kernels are 5x slower (``bench/fast_peak.py``)."""
        norm = s.layer.norm
        gamma, beta = affine  # (1, C) each, fp32
        c = x.shape[1]
        if c >= GROUP_NORM_MIN_CHANNELS:
            return F.group_norm(x, c, gamma[0], beta[0], norm.eps)  # (1, C, H, W)
        return F.batch_norm(x.contiguous(), None, None, weight=gamma[0], bias=beta[0], training=True,
                            momentum=0.0, eps=norm.eps)  # (1, C, H, W), NCHW

    def _layer(self, s: _Step, x: torch.Tensor, w: torch.Tensor, affines: list[tuple[torch.Tensor, torch.Tensor]],
               stats: StatsTape | None = None) -> torch.Tensor:
        x = self._conv(s, x)  # (B, C_out, H', W')
        if stats is not None:
            x = stats.norm(s.layer.norm, x, w)
        elif x.shape[0] == 1 and x.device.type == "cpu":
            x = self._norm_one(s, x, affines[s.index])
        elif x.is_contiguous() or x.shape[0] == 1:  # (one image on a GPU: the module's batch-norm path)
            x = s.layer.norm(x, w)
        else:  # a channels-last batch: one fused batch-norm pass per image beats the generic var_mean path 3x
            x = torch.cat([s.layer.norm(x[i : i + 1], w[i : i + 1]) for i in range(x.shape[0])])
        return F.relu(x, inplace=True) if s.layer.relu else x

    def _expand_one(self, x: torch.Tensor, w: torch.Tensor,
                    affines: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The upsampling layers for ONE image on a CPU, in the phase domain (module docstring) where
        that pays: when the next layer pads in it, or at 16+ phase channels (the group-norm kernel
        is slow for fewer: the 3-channel output layer is shuffled first and normalised as before)."""
        ready: torch.Tensor | None = None  # the next s2d layer's input: padded, unshuffled
        for i, s in enumerate(self.expand):
            if s.kind == "plain":
                x = self._layer(s, x, w, affines)
                cancel_point()
                continue
            y = F.conv2d(ready, s.weight) if ready is not None else self._conv_phases(s, x)  # (1, 4 C_out, h, w)
            ready = None
            nxt = self.expand[i + 1] if i + 1 < len(self.expand) else None
            p = nxt.layer.pad if nxt is not None and nxt.kind == "s2d" else None
            pads_in_phases = p is not None and p % 2 == 0 and p < 2 * min(y.shape[-2:])
            if not pads_in_phases and y.shape[1] < GROUP_NORM_MIN_CHANNELS:
                x = self._norm_one(s, F.pixel_shuffle(y, 2), affines[s.index])  # (1, C_out, 2h, 2w)
                x = F.relu(x, inplace=True) if s.layer.relu else x
                cancel_point()
                continue
            gamma, beta = affines[s.index]  # (1, C_out) each, fp32
            c = gamma.shape[1]
            y = F.group_norm(y, c, gamma[0].repeat_interleave(4), beta[0].repeat_interleave(4),
                             s.layer.norm.eps)  # (1, 4 C_out, h, w): group c = channel c's four phases
            if s.layer.relu:
                y = F.relu(y, inplace=True)
            if pads_in_phases:
                ready = phase_reflect_pad(y, cast(int, p))  # (1, 4 C_out, h + p, w + p)
            else:
                x = F.pixel_shuffle(y, 2)  # (1, C_out, 2h, 2w)
            cancel_point()
        return x

    def __call__(
        self, image: torch.Tensor, style_weights: torch.Tensor, stats: StatsTape | None = None
    ) -> torch.Tensor:
        b = image.shape[0]
        w = style_weights if style_weights.dim() == 2 else style_weights.unsqueeze(0).expand(b, -1)  # (B, S)
        if w.shape != (b, self.net.n_styles):
            raise ValueError(f"style_weights must be ({self.net.n_styles},) or ({b}, {self.net.n_styles})")
        m = self.net.config.multiple
        if image.shape[-2] % m or image.shape[-1] % m:
            raise ValueError(f"image sides must be multiples of {m}, got {tuple(image.shape[-2:])}")
        x = image.to(self.dtype).contiguous()  # (B, 3, H, W) NCHW: the first layer pads it, then goes channels-last
        affines = self._affines(w) if b == 1 and stats is None and x.device.type == "cpu" else []
        for s in self.contract:
            x = self._layer(s, x, w, affines, stats)  # (B, C_i, H / 2^i, W / 2^i)
            cancel_point()
        for s1, s2 in self.res:
            r = self._layer(s2, self._layer(s1, x, w, affines, stats), w, affines, stats)  # (B, C, H / m, W / m)
            x = r.add_(x)  # the residual, in place: r is a fresh tensor
            cancel_point()
        if b == 1 and stats is None and x.device.type == "cpu":
            x = self._expand_one(x, w, affines)  # (1, 3, H, W)
        else:
            for s in self.expand:
                x = self._layer(s, x, w, affines, stats)  # last: (B, 3, H, W)
                cancel_point()
        return torch.sigmoid(x.float())  # (B, 3, H, W) in [0, 1]
