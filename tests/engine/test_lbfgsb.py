"""The engine's L-BFGS-B driver (``shared.engine.lbfgsb``): SciPy's compiled routine without
SciPy's per-variable set-up, giving exactly the iterates of ``scipy.optimize.minimize``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, minimize

from shared.engine import lbfgsb

LO, HI = 0.0, 255.0


def problem(n: int = 300, seed: int = 3):
    """A coupled, non-quadratic objective whose unconstrained minimum lies partly outside [0, 255]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) / np.sqrt(n)
    hess = a.T @ a + 0.05 * np.eye(n)  # (n, n), positive definite
    target = rng.uniform(-120.0, 380.0, n)  # (n,)
    calls: list[np.ndarray] = []

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(v)
        r = v - target
        return float(r @ hess @ r + 0.5 * np.sin(v / 9.0).sum()), 2.0 * hess @ r + np.cos(v / 9.0) / 18.0

    return fun, rng.uniform(LO, HI, n), calls


def scipy_reference(fun, x0, maxiter: int, maxfun: int, m: int):
    its: list[int] = []
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=Bounds(LO, HI), callback=lambda *_: its.append(1),
                   options={"maxiter": maxiter, "maxfun": maxfun, "maxcor": m, "ftol": 0.0, "gtol": 0.0})
    return res, len(its)


def test_the_installed_scipy_runs_the_fast_driver() -> None:
    # given the SciPy the project installs (>= 1.15: the C routine with integer task codes)
    # when the driver checks the compiled routine
    # expect it drives setulb itself rather than falling back to minimize
    assert lbfgsb._compiled_setulb() is not None


@pytest.mark.parametrize(("maxiter", "maxfun", "m"), [(1, 3, 20), (9, 27, 20), (40, 120, 5), (400, 6, 20)])
def test_iterates_equal_scipy_minimize(maxiter: int, maxfun: int, m: int) -> None:
    # given a bound-constrained problem and SciPy's own L-BFGS-B run on it
    fun, x0, _ = problem()
    ref, ref_iterations = scipy_reference(fun, x0, maxiter, maxfun, m)
    # when the engine's driver runs with the same limits and correction pairs
    iterations: list[int] = []
    res = lbfgsb.minimize_box(fun, x0, LO, HI, maxiter=maxiter, maxfun=maxfun, m=m,
                              callback=lambda: iterations.append(1))
    # expect bit-identical iterates, counts and callbacks (the maxfun=6 case stops on evaluations)
    assert res.driver == "setulb"
    np.testing.assert_array_equal(res.x, np.clip(ref.x, LO, HI))
    assert (res.nit, res.nfev) == (ref.nit, ref.nfev)
    assert len(iterations) == ref_iterations == res.nit


@pytest.mark.parametrize("kind", ["noisy", "nan"])
def test_a_point_asked_for_twice_is_not_evaluated_again(kind: str) -> None:
    # given objectives on which the line search stalls and asks for the same point again:
    # one with noise in its value, one that turns NaN away from the start
    def make():
        rng = np.random.default_rng(0)
        calls: list[int] = []

        def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
            calls.append(1)
            if kind == "nan" and v[0] < 100:
                return float("nan"), 2 * v
            return float((v**2).sum() + (1e-3 * rng.normal() if kind == "noisy" else 0.0)), 2 * v

        return fun, calls

    x0 = np.full(50, 128.0)
    fun_a, calls_a = make()
    res = lbfgsb.minimize_box(fun_a, x0, LO, HI, maxiter=30, maxfun=90, m=20)
    # when SciPy's minimize runs the same problem
    fun_b, calls_b = make()
    ref, _ = scipy_reference(fun_b, x0, 30, 90, 20)
    # expect the same iterations and the same (few) evaluations, not one per repeated request
    assert (res.nit, res.nfev, len(calls_a)) == (ref.nit, ref.nfev, len(calls_b))
    assert len(calls_a) <= 3
    np.testing.assert_array_equal(res.x, np.clip(ref.x, LO, HI))


def test_a_routine_that_fails_the_probe_is_not_driven(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a SciPy whose compiled routine takes other arguments
    from scipy.optimize import _lbfgsb

    def other_interface(*args: object) -> None:
        raise TypeError("setulb() takes 18 positional arguments")

    monkeypatch.setattr(_lbfgsb, "setulb", other_interface)
    lbfgsb._compiled_setulb.cache_clear()
    try:
        # when the driver checks it, and then minimizes a problem (SciPy's own routine back in place)
        found = lbfgsb._compiled_setulb()
        monkeypatch.undo()
        fun, x0, _ = problem(n=40)
        res = lbfgsb.minimize_box(fun, x0, LO, HI, maxiter=5, maxfun=15, m=5)
    finally:
        lbfgsb._compiled_setulb.cache_clear()
    # expect it refused, and minimize did the work
    assert found is None and res.driver == "minimize"


def test_reaches_the_box_constrained_minimum() -> None:
    # given a separable quadratic whose target lies partly outside the box
    target = np.array([-40.0, 12.5, 300.0, 128.0, 255.0, 0.0])
    fun = lambda v: (float(((v - target) ** 2).sum()), 2.0 * (v - target))  # noqa: E731
    # when minimized from mid-grey
    res = lbfgsb.minimize_box(fun, np.full(6, 128.0), LO, HI, maxiter=50, maxfun=150, m=10)
    # expect the projection of the target onto [0, 255]
    np.testing.assert_allclose(res.x, np.clip(target, LO, HI), atol=1e-6)


def test_evaluates_only_inside_the_box_and_never_keeps_the_callers_array() -> None:
    # given a start partly outside the box
    fun, x0, calls = problem(n=50)
    x0 = x0.copy()
    x0[:5] = [-30.0, 400.0, 256.0, -1e-3, 1e9]
    # when minimized
    res = lbfgsb.minimize_box(fun, x0, LO, HI, maxiter=15, maxfun=45, m=20)
    # expect the start clipped, every evaluation feasible, each given its own array
    assert calls and all(c.min() >= LO and c.max() <= HI for c in calls)
    assert len({id(c) for c in calls}) == len(calls)
    assert res.x.min() >= LO and res.x.max() <= HI
    assert x0[1] == 400.0  # the caller's start is left as it was


def test_falls_back_to_scipy_minimize_where_the_routine_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a SciPy whose compiled routine this driver does not know (older than 1.15)
    monkeypatch.setattr(lbfgsb, "_compiled_setulb", lambda: None)
    fun, x0, _ = problem(n=80)
    # when minimized
    res = lbfgsb.minimize_box(fun, x0, LO, HI, maxiter=12, maxfun=36, m=20)
    # expect minimize's answer, marked as such
    ref, _ = scipy_reference(fun, x0, 12, 36, 20)
    assert res.driver == "minimize"
    np.testing.assert_array_equal(res.x, np.clip(ref.x, LO, HI))
    assert res.nit == ref.nit
