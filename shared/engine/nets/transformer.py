"""Feed-forward style transfer network with conditional instance normalization.

The image transformation network of Johnson, Alahi & Fei-Fei, "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution" (ECCV 2016), with the changes of Dumoulin,
Shlens & Kudlur, "A Learned Representation for Artistic Style" (ICLR 2017):

- every convolution is preceded by reflection padding (no zero borders, no edge artefacts);
- downsampling by strided convolutions, upsampling by nearest-neighbour resize followed by
  a stride-1 convolution instead of transposed convolutions (no checkerboard artefacts,
  Odena et al. 2016);
- every convolution is followed by *conditional instance normalization* (CIN): instance
  normalization whose scale ``gamma`` and shift ``beta`` are looked up in per-style tables
  of shape ``(n_styles, C)``. One network thus holds N styles; a style is a row of the
  tables, and a convex combination of rows (a style weight vector) mixes styles
  (Dumoulin et al. 2017, section 4);
- the output goes through a sigmoid, so images are RGB in [0, 1] in and out.

Because a CIN follows every convolution, convolution biases would be cancelled by the
mean subtraction; the convolutions have none.

The architecture is a ``TransformerConfig``: the defaults are the network of Dumoulin et
al. (32-64-128 channels, 5 residual blocks); the built-in ``multistyle26`` model is the
slimmer 32-32-32 / 6-block / 8-4 network of the TensorFlow Android stylize demo
(see ``shared.engine.nets.onnx_import``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.engine.context import cancel_point

ARCH = "cin-transformer"


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a ``CINTransformer``; stored as ``config`` in ``fast`` checkpoints.

    - ``down_channels``: output channels of the contracting convolutions; the first has a
      ``first_kernel`` kernel and stride 1, each further one a 3x3 kernel and stride 2.
    - ``n_res``: residual blocks (two 3x3 conv + CIN each, ReLU between) at the bottom
      resolution, with ``down_channels[-1]`` channels.
    - ``up_channels``: output channels of the expanding (2x nearest upsample + 3x3 conv)
      layers; there is one per stride-2 layer, so the output has the input's size.
    - ``last_kernel``: kernel of the final convolution to ``out_channels``, followed by a CIN
      and the sigmoid.
    """

    n_styles: int = 1
    in_channels: int = 3
    out_channels: int = 3
    down_channels: tuple[int, ...] = (32, 64, 128)
    first_kernel: int = 9
    n_res: int = 5
    up_channels: tuple[int, ...] = (64, 32)
    last_kernel: int = 9
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "down_channels", tuple(int(c) for c in self.down_channels))
        object.__setattr__(self, "up_channels", tuple(int(c) for c in self.up_channels))
        if self.n_styles < 1:
            raise ValueError("n_styles must be >= 1")
        if not self.down_channels:
            raise ValueError("down_channels needs at least one entry")
        if len(self.up_channels) != len(self.down_channels) - 1:
            raise ValueError(
                f"up_channels needs one entry per stride-2 layer: {len(self.down_channels) - 1}, "
                f"got {len(self.up_channels)}"
            )
        if self.first_kernel % 2 == 0 or self.last_kernel % 2 == 0:
            raise ValueError("kernels must be odd (same-size reflection padding)")

    @property
    def multiple(self) -> int:
        """Input sides must divide by this so the upsampled output has the input's size."""
        return 2 ** (len(self.down_channels) - 1)

    @property
    def min_side(self) -> int:
        """Smallest padded input side for which every reflection pad is valid."""
        # reflection padding needs pad < side: the big kernels at full resolution, and a
        # 1-pixel pad at the bottom resolution (side >= 2 there).
        need = max(self.first_kernel // 2 + 1, self.last_kernel // 2 + 1, 2 * self.multiple)
        return -(-need // self.multiple) * self.multiple

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["down_channels"] = list(self.down_channels)
        d["up_channels"] = list(self.up_channels)
        return {"arch": ARCH, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        d = dict(d)
        arch = d.pop("arch", ARCH)
        if arch != ARCH:
            raise ValueError(f"not a {ARCH} config: arch={arch!r}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown transformer config keys: {sorted(unknown)}")
        return cls(**d)


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with per-style affine tables (Dumoulin et al. 2017, eq. 5).

    ``y = gamma_s * (x - mu(x)) / sqrt(var(x) + eps) + beta_s`` where ``gamma_s = w @ gamma``
    and ``beta_s = w @ beta`` for a style weight vector ``w`` (one-hot for one style,
    convex weights to mix). Statistics are per sample and channel over H x W, biased
    variance, computed in fp32 whatever the input dtype.
    """

    def __init__(self, channels: int, n_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(n_styles, channels))  # (S, C)
        self.beta = nn.Parameter(torch.zeros(n_styles, channels))  # (S, C)

    def affine(self, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) of the style mix ``style_weights`` (B, S): fp32 (B, C) each."""
        sw = style_weights.float()  # (B, S)
        # elementwise mix, not a matmul: autocast would run ``@`` in bf16 and round the tables
        gamma = (sw.unsqueeze(-1) * self.gamma.float()).sum(1)  # (B, S, C) -> (B, C)
        beta = (sw.unsqueeze(-1) * self.beta.float()).sum(1)  # (B, S, C) -> (B, C)
        return gamma, beta

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gamma, beta = self.affine(style_weights)  # (B, C) each
        if b == 1 or x.is_contiguous():
            # Instance norm of (B, C, H, W) is batch norm of (1, B*C, H, W) with batch
            # statistics. The CPU and CUDA batch-norm kernels compute the statistics in fp32
            # for bf16/fp16 inputs and fuse normalize + affine in one pass: 3-10x faster than
            # var_mean + mul + add on CPU, and the same numbers.
            # bf16/fp16 activations with fp32 gamma/beta: the mixed-dtype kernel.
            # (No reshape when B == 1: reshaping a channels-last tensor to its own shape gives
            # a view whose batch stride confuses padding into a full NCHW copy.)
            flat = x if b == 1 else x.reshape(1, b * c, h, w)  # (1, B*C, H, W), a view
            y = F.batch_norm(
                flat, None, None, weight=gamma.reshape(b * c), bias=beta.reshape(b * c),
                training=True, momentum=0.0, eps=self.eps,
            )
            return y if b == 1 else y.reshape(b, c, h, w)  # (B, C, H, W)
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)  # (B, C, 1, 1) each
        return self.with_statistics(x, mean, var, (gamma, beta))

    def with_statistics(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                        affine: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """CIN of ``x`` (B, C, H, W) with the given ``mean`` and ``var`` (anything that views as
        (B or 1, C, 1, 1)) and ``affine`` = ``self.affine(style_weights)``, computed in fp32."""
        b, c = x.shape[:2]
        gamma, beta = affine  # (B, C) each
        mean, var = mean.to(x.device).reshape(-1, c, 1, 1), var.to(x.device).reshape(-1, c, 1, 1)
        scale = gamma.view(b, c, 1, 1) * torch.rsqrt(var + self.eps)  # (B, C, 1, 1)
        shift = beta.view(b, c, 1, 1) - mean * scale  # (B, C, 1, 1)
        return (x.float() * scale + shift).to(x.dtype)  # (B, C, H, W)


class ConvCIN(nn.Module):
    """[2x nearest upsample] -> reflection pad -> conv (no bias) -> CIN -> [ReLU]."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        n_styles: int,
        *,
        stride: int = 1,
        upsample: bool = False,
        relu: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.relu = relu
        self.pad = kernel // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=False)
        self.norm = ConditionalInstanceNorm(c_out, n_styles, eps)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C_in, 2H, 2W)
        x = F.pad(x, (self.pad,) * 4, mode="reflect")  # (B, C_in, H + 2p, W + 2p)
        x = F.conv2d(x, self.conv.weight.to(x.dtype), None, self.conv.stride)  # (B, C_out, H', W')
        x = self.norm(x, style_weights)  # (B, C_out, H', W')
        return F.relu(x, inplace=True) if self.relu else x  # in place: batch norm saves its input, not its output


class ResidualBlock(nn.Module):
    """``x + CIN(conv(ReLU(CIN(conv(x)))))`` with 3x3 reflection-padded convs (Johnson et al. 2016)."""

    def __init__(self, channels: int, n_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                ConvCIN(channels, channels, 3, n_styles, relu=True, eps=eps),
                ConvCIN(channels, channels, 3, n_styles, relu=False, eps=eps),
            ]
        )

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](x, style_weights)  # (B, C, H, W)
        h = self.layers[1](h, style_weights)  # (B, C, H, W)
        return x + h  # (B, C, H, W)


class CINTransformer(nn.Module):
    """N-style image transformation network (Johnson et al. 2016 + Dumoulin et al. 2017).

    ``forward(image, style_weights)``: ``image`` (B, 3, H, W) RGB in [0, 1] with H and W
    multiples of ``config.multiple``; ``style_weights`` (n_styles,) or (B, n_styles), rows
    normally non-negative and summing to 1. Returns (B, 3, H, W) in [0, 1].
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TransformerConfig()
        s, eps = cfg.n_styles, cfg.norm_eps
        down: list[nn.Module] = []
        c_prev = cfg.in_channels
        for i, c in enumerate(cfg.down_channels):
            kernel, stride = (cfg.first_kernel, 1) if i == 0 else (3, 2)
            down.append(ConvCIN(c_prev, c, kernel, s, stride=stride, eps=eps))
            c_prev = c
        self.contract = nn.ModuleList(down)
        self.res = nn.ModuleList([ResidualBlock(c_prev, s, eps) for _ in range(cfg.n_res)])
        up: list[nn.Module] = []
        for c in cfg.up_channels:
            up.append(ConvCIN(c_prev, c, 3, s, upsample=True, eps=eps))
            c_prev = c
        up.append(ConvCIN(c_prev, cfg.out_channels, cfg.last_kernel, s, relu=False, eps=eps))
        self.expand = nn.ModuleList(up)

    @property
    def n_styles(self) -> int:
        return self.config.n_styles

    def style_vector(self, weights: dict[int, float] | int, device: torch.device | str | None = None) -> torch.Tensor:
        """A (n_styles,) weight vector from ``{index: weight}`` (or one index), normalized to sum 1."""
        if isinstance(weights, int):
            weights = {weights: 1.0}
        vec = torch.zeros(self.n_styles)  # (S,)
        for idx, w in weights.items():
            if not 0 <= idx < self.n_styles:
                raise IndexError(f"style index {idx} is outside 0..{self.n_styles - 1}")
            vec[idx] += float(w)
        total = float(vec.sum())
        if total <= 0:
            raise ValueError("style weights must not all be zero")
        return (vec / total).to(device or next(self.parameters()).device)

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        w = style_weights
        if w.dim() == 1:
            w = w.unsqueeze(0).expand(b, -1)  # (B, S)
        if w.shape != (b, self.n_styles):
            raise ValueError(
                f"style_weights must be ({self.n_styles},) or ({b}, {self.n_styles}), "
                f"got {tuple(style_weights.shape)}"
            )
        m = self.config.multiple
        if image.shape[-2] % m or image.shape[-1] % m:
            raise ValueError(f"image sides must be multiples of {m}, got {tuple(image.shape[-2:])}")
        device_type = image.device.type
        dtype = image.dtype
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        # The layers compute in the dtype of their input. Under autocast we cast once here and
        # switch autocast off inside: its CPU policy runs reflection padding, upsampling and
        # batch norm in fp32, which would add two full-size copies per layer.
        with torch.autocast(device_type=device_type, enabled=False):
            x = image.to(dtype)  # (B, 3, H, W)
            for layer in self.contract:
                x = layer(x, w)  # (B, C_i, H / 2^i, W / 2^i)
                cancel_point()
            for block in self.res:
                x = block(x, w)  # (B, C, H / m, W / m)
                cancel_point()
            for layer in self.expand:
                x = layer(x, w)  # (B, C_j, H * 2^j / m, W * 2^j / m), last: (B, 3, H, W)
                cancel_point()
            return torch.sigmoid(x.float())  # (B, 3, H, W) in [0, 1]


def build_transformer(config: TransformerConfig | dict[str, Any]) -> CINTransformer:
    """A freshly initialized network for a config (or its ``to_dict`` form)."""
    if isinstance(config, dict):
        config = TransformerConfig.from_dict(config)
    return CINTransformer(config)
