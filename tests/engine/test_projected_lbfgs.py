"""The device-resident box-constrained L-BFGS (``shared.engine.projected_lbfgs``) that Gatys
jobs use on a GPU, run here on the CPU: it stays in the box, reaches the box's minimum, and on
a real (tiny) Gatys job gets as low as the host's L-BFGS-B."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from shared.engine.methods import gatys, optimize
from shared.engine.projected_lbfgs import minimize_box_on_device
from shared.errors import JobCanceled
from shared.jobs.specs import OptimizeSpec

pytestmark = pytest.mark.usefixtures("one_thread")

LO, HI = 0.0, 255.0


def coupled(n: int = 300, seed: int = 3):
    """A coupled, non-quadratic objective whose unconstrained minimum lies partly outside [0, 255]."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5
    hess = a.T @ a + 0.05 * torch.eye(n, dtype=torch.float64)  # (n, n)
    target = torch.rand(n, generator=gen, dtype=torch.float64) * 500.0 - 120.0  # (n,)
    seen: list[torch.Tensor] = []

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        seen.append(x.clone())
        v = x.reshape(-1).double()
        r = v - target
        f = r @ hess @ r + 0.5 * torch.sin(v / 9.0).sum()
        g = 2.0 * hess @ r + torch.cos(v / 9.0) / 18.0
        return float(f), g.reshape(x.shape).to(x.dtype)

    x0 = (torch.rand(n, generator=gen) * 255.0).reshape(1, 3, 10, n // 30)
    return fun, x0, seen


def test_reaches_the_minimum_of_the_box() -> None:
    # given a separable quadratic whose target lies partly outside the box
    target = torch.tensor([-40.0, 12.5, 300.0, 128.0, 255.0, 0.0]).reshape(1, 3, 1, 2)
    fun = lambda x: (float(((x - target) ** 2).sum()), 2.0 * (x - target))  # noqa: E731
    # when minimized from mid-grey
    res = minimize_box_on_device(fun, torch.full_like(target, 128.0), LO, HI, maxiter=50, maxfun=150, m=10)
    # expect the projection of the target onto [0, 255], reached before the iteration limit
    torch.testing.assert_close(res.x, target.clamp(LO, HI), atol=1e-3, rtol=0)
    assert res.nit < 50


def test_stays_in_the_box_descends_and_keeps_its_limits() -> None:
    # given a coupled problem and a start partly outside the box
    fun, x0, seen = coupled()
    x0.view(-1)[:3] = torch.tensor([-30.0, 400.0, 1e9])
    iterations: list[int] = []
    # when minimized for 30 iterations
    res = minimize_box_on_device(fun, x0, LO, HI, maxiter=30, maxfun=90, m=20, callback=lambda k: iterations.append(k))
    # expect every evaluation inside the box, one callback per iteration, the limits kept
    assert all(float(x.min()) >= LO and float(x.max()) <= HI for x in seen)
    assert len(iterations) == res.nit <= 30 and res.nfev <= 90
    assert float(res.x.min()) >= LO and float(res.x.max()) <= HI


def test_accepted_losses_fall_and_match_scipy_l_bfgs_b() -> None:
    # given a coupled problem and SciPy's L-BFGS-B run on it for the same iterations
    from scipy.optimize import Bounds, minimize

    fun, x0, _ = coupled()
    accepted: list[float] = []
    values: list[float] = []  # f of every evaluation, in order

    def recording(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        f, g = fun(x)
        values.append(f)
        return f, g

    # when minimized on the tensors' device
    res = minimize_box_on_device(recording, x0, LO, HI, maxiter=60, maxfun=180, m=20,
                                 callback=lambda k: accepted.append(values[k - 1]))
    ref = minimize(lambda v: (fun(torch.from_numpy(v).reshape(x0.shape).float())[0],
                              fun(torch.from_numpy(v).reshape(x0.shape).float())[1].double().numpy().ravel()),
                   x0.double().numpy().ravel(), jac=True, method="L-BFGS-B", bounds=Bounds(LO, HI),
                   options={"maxiter": 60, "maxfun": 180, "maxcor": 20, "ftol": 0.0, "gtol": 0.0})
    # expect no accepted point above the one before, and the end within 1 % of L-BFGS-B's
    assert all(b <= a for a, b in itertools.pairwise(accepted))
    final = fun(res.x)[0]
    assert final <= ref.fun + 0.01 * abs(ref.fun), (final, ref.fun)


def test_stops_when_every_variable_is_held_at_a_bound() -> None:
    # given a linear objective that pushes every variable below 0
    fun = lambda x: (float(x.sum()), torch.ones_like(x))  # noqa: E731
    # when minimized with room for 40 iterations
    res = minimize_box_on_device(fun, torch.full((1, 3, 4, 4), 50.0), LO, HI, maxiter=40, maxfun=120, m=5)
    # expect all at the lower bound and an early stop (no descent left)
    assert float(res.x.abs().max()) == 0.0
    assert res.nit < 40


@pytest.fixture
def on_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gatys's L-BFGS takes the GPU's path (the device-resident optimizer) on this CPU."""
    monkeypatch.setattr(gatys, "lbfgs_on_device", lambda device: True)


def test_a_gatys_job_on_the_device_path_gets_as_low_as_l_bfgs_b(engine_ctx, monkeypatch) -> None:
    # given a tiny optimize job rendered by the host's L-BFGS-B
    spec = OptimizeSpec(content="content", styles=[{"image": "style_a"}], size=40, steps=40)
    host = optimize.run(spec, engine_ctx())
    # when the same job takes the device path
    monkeypatch.setattr(gatys, "lbfgs_on_device", lambda device: True)
    ctx = engine_ctx()
    device = optimize.run(spec, ctx)
    # expect one report per iteration, a valid image, and a loss close to L-BFGS-B's: on these
    # tiny synthetic images it ends 0.96-1.09x L-BFGS-B's loss (its weaker handling of pixels that
    # reach a bound; without bounds the two agree within 0.2 %), where a gradient method without
    # curvature pairs ends at 4-6x and Adam at 7-13x
    assert len(ctx.reports) == 40 and ctx.reports[-1].step == 40
    arr = np.asarray(device.image)
    assert arr.shape == np.asarray(host.image).shape and arr.std() > 5
    assert device.metrics["loss"] <= 1.15 * host.metrics["loss"], (device.metrics["loss"], host.metrics["loss"])
    assert device.metrics["evaluations"] >= 40


@pytest.mark.usefixtures("on_device")
def test_the_device_path_stops_on_cancel(engine_ctx) -> None:
    # given a job canceled after its fifth progress report
    spec = OptimizeSpec(content="content", styles=[{"image": "style_a"}], size=40, steps=40)
    ctx = engine_ctx(cancel_after=5)
    # when rendered on the device path
    # expect it stops at the next evaluation
    with pytest.raises(JobCanceled):
        optimize.run(spec, ctx)
    assert len(ctx.reports) == 5


def test_only_a_gpu_takes_the_device_path() -> None:
    # given the two kinds of device a worker runs on
    # expect the device-resident optimizer on CUDA and SciPy's L-BFGS-B on the CPU
    assert gatys.lbfgs_on_device(torch.device("cuda")) is True
    assert gatys.lbfgs_on_device(torch.device("cpu")) is False


def rugged_objective():
    """A LossFn over (1, 3, 6, 6) pixels: a bowl plus ripples that its gradient does not see (a
    deterministic function of x, detached), so line searches fail now and then."""
    target = torch.linspace(-60.0, 320.0, 108).reshape(1, 3, 6, 6)

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        bowl = ((x - target) ** 2).sum()
        ripples = 3e4 * torch.sin(x.detach().sum() * 7.0)
        total = bowl + ripples
        return total, {"content": float(bowl.detach()), "style": float(ripples), "tv": 0.0}

    return objective


def walled_objective():
    """A LossFn whose gradient points downhill but whose value jumps up anywhere but at the start
    (mid-grey): no line search can succeed, so the optimizer returns the start."""
    target = torch.zeros(1, 3, 6, 6)

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        bowl = ((x - target) ** 2).sum()
        wall = 1e9 * float(bool((x.detach() != 128.0).any()))
        return bowl + wall, {"content": float(bowl.detach()), "style": wall, "tv": 0.0}

    return objective


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize(("kind", "steps"), [("rugged", 1), ("rugged", 2), ("rugged", 25), ("walled", 5)])
def test_the_losses_returned_are_those_of_the_pixels_returned(engine_ctx, monkeypatch, device_path, kind,
                                                              steps) -> None:
    # given a rugged objective (one step leaves room for 3 evaluations only) or one on which no
    # step succeeds, and either L-BFGS path
    from shared.jobs.specs import GatysParams

    monkeypatch.setattr(gatys, "lbfgs_on_device", lambda device: device_path)
    objective = rugged_objective() if kind == "rugged" else walled_objective()
    ctx = engine_ctx()
    x0 = torch.full((1, 3, 6, 6), 128.0)
    # when the pixels are optimized
    x, last = gatys.optimize_pixels(x0, objective, GatysParams(steps=steps), ctx, gatys.StepCounter(steps), "t")
    # expect the losses handed back, and the last progress report's, to be those of x itself
    total, parts = objective(x)
    assert last["loss"] == pytest.approx(float(total), rel=1e-6)
    assert last["content"] == pytest.approx(parts["content"], rel=1e-6)
    assert ctx.reports[-1].loss == pytest.approx(float(total), rel=1e-6)
    assert len(ctx.reports) == steps and float(x.min()) >= 0.0 and float(x.max()) <= 255.0
