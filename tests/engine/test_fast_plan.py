"""The fast network's inference plan computes the eager network's function (sub-pixel, space-to-depth)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared.engine.methods import fast
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.engine.nets.transformer_infer import (
    InferencePlan,
    StatsTape,
    pad_channels_last,
    phase_reflect_pad,
    space_to_depth_weight,
    subpixel_weight,
)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(F.mse_loss(a.float(), b.float()))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_subpixel_weight_equals_upsample_reflect_pad_conv() -> None:
    # given a random 3x3 kernel and a low-resolution map
    torch.manual_seed(0)
    w = torch.randn(5, 7, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 7, 6, 9, dtype=torch.float64)
    # when both forms run
    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    ref = F.conv2d(F.pad(up, (1, 1, 1, 1), mode="reflect"), w)  # (2, 5, 12, 18)
    got = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), subpixel_weight(w)), 2)
    # expect the same numbers
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-10)


@pytest.mark.parametrize("pad", [1, 2, 4])
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pad_channels_last_equals_aten_pad(pad: int, mode: str, channels_last: bool, dtype: torch.dtype) -> None:
    # given a batch of two odd-sized maps, in either memory layout
    torch.manual_seed(2)
    x = torch.randn(2, 5, 7, 11).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # when padded by the slice-copy version and by ATen's kernels
    got = pad_channels_last(x, pad, mode)
    ref = F.pad(x, (pad,) * 4, mode=mode)
    # expect exactly the same values, channels-last out
    assert torch.equal(got, ref)
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("pad", [2, 4, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_phase_reflect_pad_equals_shuffle_pad_unshuffle(pad: int, dtype: torch.dtype) -> None:
    # given a phase-domain map (4C channels) of a non-square full-resolution image
    torch.manual_seed(3)
    y = torch.randn(2, 12, 5, 7).to(dtype).contiguous(memory_format=torch.channels_last)  # X: (2, 3, 10, 14)
    # when padded directly and through the full-resolution tensor
    got = phase_reflect_pad(y, pad)
    ref = F.pixel_unshuffle(F.pad(F.pixel_shuffle(y, 2), (pad,) * 4, mode="reflect"), 2)
    # expect exactly the same values, channels-last out
    assert torch.equal(got, ref)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_phase_reflect_pad_refuses_an_odd_or_too_large_pad() -> None:
    y = torch.randn(1, 8, 3, 3)
    for pad in (1, 6):  # odd; not below the full-resolution side (6)
        with pytest.raises(ValueError):
            phase_reflect_pad(y, pad)


@pytest.mark.parametrize("k", [5, 9])
def test_space_to_depth_weight_equals_the_direct_convolution(k: int) -> None:
    # given a random k x k kernel and an even-sized padded input
    torch.manual_seed(1)
    w = torch.randn(3, 4, k, k, dtype=torch.float64)
    x = torch.randn(1, 4, 10 + k - 1, 14 + k - 1, dtype=torch.float64)
    x = F.pad(x, (0, (k - 1) % 2, 0, (k - 1) % 2))  # even sides for the unshuffle
    # when both forms run
    ref = F.conv2d(x, w)
    got = F.pixel_shuffle(F.conv2d(F.pixel_unshuffle(x, 2), space_to_depth_weight(w)), 2)
    # expect the same numbers where both are defined
    h, wd = min(ref.shape[-2], got.shape[-2]), min(ref.shape[-1], got.shape[-1])
    assert h >= 10 and wd >= 14
    assert torch.allclose(got[..., :h, :wd], ref[..., :h, :wd], atol=1e-10)


@pytest.mark.parametrize(("config", "batch"), [
    (TransformerConfig(n_styles=2), 2),  # a batch: the generic path
    (TransformerConfig(n_styles=2), 1),  # one image: the upsampling layers in the phase domain, 9x9 pads by 4
    (TransformerConfig(n_styles=2, up_channels=(8, 4), last_kernel=7), 1),  # odd pad 3: shuffle, pad, unshuffle
    (TransformerConfig(n_styles=2, up_channels=(8, 4), last_kernel=5), 1),  # even pad 2, few phase channels
])
def test_plan_matches_the_eager_network_in_fp32_and_bf16(config: TransformerConfig, batch: int) -> None:
    # given a randomly initialised network with non-trivial gamma/beta, 2 styles mixed, and images
    torch.manual_seed(2)
    net = CINTransformer(config).eval().requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(batch, 3, 36, 44)
    vec = net.style_vector({0: 0.3, 1: 0.7})
    with torch.inference_mode():
        ref = net(x, vec)  # (B, 3, 36, 44) eager fp32
        # when the plan runs in fp32 and bf16
        y32 = InferencePlan(net, torch.float32, "cpu")(x, vec)
        ybf = InferencePlan(net, torch.bfloat16, "cpu")(x, vec)
    # expect fp32 identical to rounding, bf16 within the engine's 40 dB contract
    kinds = {s.kind for s in InferencePlan(net, torch.float32, "cpu").expand}
    assert kinds == {"subpixel", "s2d"}
    assert _psnr(y32, ref) > 90.0
    assert _psnr(ybf, ref) >= 40.0


def test_a_statistics_tape_replays_what_it_recorded() -> None:
    # given a network and two different images
    torch.manual_seed(6)
    net = CINTransformer(TransformerConfig(n_styles=2)).eval().requires_grad_(False)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 0.5
    vec = net.style_vector(1)
    plan = InferencePlan(net, torch.float32, "cpu")
    with torch.inference_mode():
        # when a's statistics are recorded, then replayed while a itself runs again, and while b runs
        tape = StatsTape()
        ya = plan(a, vec, tape)
        n_layers = len(plan.contract) + 2 * len(plan.res) + len(plan.expand)
        again = plan(a, vec, StatsTape(tape.pairs))
        b_own, b_with_a = plan(b, vec), plan(b, vec, StatsTape(tape.pairs))
    # expect one (mean, var) per CIN layer, a unchanged by its own statistics, b changed by a's
    assert len(tape.pairs) == n_layers
    assert _psnr(again, ya) > 90.0
    assert _psnr(b_with_a, b_own) < 40.0
    with pytest.raises(ValueError), torch.inference_mode():
        plan(torch.rand(2, 3, 32, 32), vec, StatsTape())


def test_stylize_tensor_of_the_builtin_model_matches_its_eager_forward() -> None:
    # given the built-in model and a smooth test image
    model = fast.load_fast_model("multistyle26")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 72), indexing="ij")
    x = torch.stack([yy, xx, (yy * xx) ** 0.5]).unsqueeze(0)  # (1, 3, 64, 72)
    vec = model.net.style_vector(7)
    # when the engine's path runs (the plan) and the eager module runs
    y = fast.stylize_tensor(model.net, x, vec, torch.float32)
    with torch.inference_mode():
        ref = model.net(x.contiguous(), vec)
    # expect >= 40 dB (it is ~130 in fp32), and the plan is cached per dtype
    assert _psnr(y, ref) >= 40.0
    assert fast.inference_plan(model.net, torch.float32, torch.device("cpu")) is fast.inference_plan(
        model.net, torch.float32, torch.device("cpu"))
