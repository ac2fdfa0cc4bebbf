"""Box-constrained L-BFGS that stays on the tensors' device: two-metric projection.

Bertsekas 1982, "Projected Newton Methods for Optimization Problems with Simple Constraints"
(SIAM J. Control Optim. 20(2)): near a bound, the variables whose gradient pushes them out of
the box ("binding") take no quasi-Newton step and stay where they are; the others take the
L-BFGS step (Nocedal 1980, "Updating Quasi-Newton Matrices with Limited Storage", Math. Comp.
35: the two-loop recursion over the last ``m`` pairs), and the trial point is projected onto
the box. Kim, Sra & Dhillon 2010 ("Tackling Box-Constrained Optimization via a New Projected
Quasi-Newton Approach", SIAM J. Sci. Comput. 32(6)) use the same split with limited memory.
The line search backtracks along the projected path until the Armijo condition holds.

Why: the engine's L-BFGS-B (``shared.engine.lbfgsb``, SciPy's compiled routine) keeps its
state in host float64 arrays, so on a GPU every evaluation copies the image-sized gradient to
the host and the routine's own step (~0.1 s per iteration at 512 px, single-threaded) dwarfs
the ~3 ms evaluation. Here every vector is a tensor on the job's device; the host reads a few
scalars per evaluation (the loss and its parts, for the line search and progress) and a few
inner products per iteration, never a vector. The CPU keeps
L-BFGS-B, whose pictures the tests and benchmarks were measured with (``gatys.lbfgs_on_device``).

How close (docs/performance.md, the GPU path): a 512 px, 300-iteration ``optimize`` job on a
photo ends at 0.9997x L-BFGS-B's loss with the same picture; on tiny synthetic images,
0.96-1.09x. L-BFGS-B's generalized Cauchy point fixes the variables that reach a bound during
a step; the two-metric split only holds those already at one (without bounds the two agree).

All vectors are (1, 3, H, W) like the pixels; the pairs are kept in float32.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: f and its gradient at x (1, 3, H, W); called with a tensor it may keep.
DeviceFunAndGrad = Callable[[torch.Tensor], tuple[float, torch.Tensor]]

ARMIJO_C1 = 1e-4  # sufficient decrease along the projected path
BACKTRACK = 0.5  # step shrink per failed trial
BINDING_EPS = 1e-3  # a pixel this close to a bound (0-255 units) counts as at it
MAX_DOUBLINGS = 12  # a gradient step grows at most 2^12 times past its first trial


@dataclass(frozen=True)
class DeviceResult:
    x: torch.Tensor  # (1, 3, H, W), inside [lo, hi]
    nit: int  # iterations
    nfev: int  # evaluations
    k: int  # which evaluation (1-based) produced x


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The inner product of two same-shaped tensors, as a 0-d tensor on their device (no
    temporary for contiguous tensors, which the optimizer's all are)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _two_loop(g: torch.Tensor, pairs: deque[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """-H g: the L-BFGS inverse-Hessian approximation of the stored pairs applied to ``g``."""
    q = g.clone()
    alphas: list[torch.Tensor] = []
    for s, y, rho in reversed(pairs):
        a = rho * _dot(s, q)
        q.sub_(y * a)
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        q.mul_(_dot(s, y) / _dot(y, y))  # H0 = (s.y / y.y) I (Nocedal & Wright, eq. 7.20)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        b = rho * _dot(y, q)
        q.add_(s * (a - b))
    return q.neg_()


@dataclass
class _Point:
    x: torch.Tensor  # (1, 3, H, W)
    f: float
    g: torch.Tensor  # (1, 3, H, W)
    k: int  # which evaluation (1-based) produced it


class _Evaluator:
    """Counts the evaluations of ``fun`` and numbers the points they produce."""

    def __init__(self, fun: DeviceFunAndGrad) -> None:
        self.fun, self.count = fun, 0

    def __call__(self, x: torch.Tensor) -> _Point:
        f, g = self.fun(x)
        self.count += 1
        return _Point(x, f, g, self.count)


def _extrapolate(evaluate: _Evaluator, x: torch.Tensor, d: torch.Tensor, step: float, best: _Point, lo: float,
                 hi: float, maxfun: int) -> _Point:
    """Try twice the step along the projected path while the loss keeps falling (at most
    ``MAX_DOUBLINGS`` times, within ``maxfun`` evaluations in all); returns the best point."""
    for _ in range(MAX_DOUBLINGS):
        if evaluate.count >= maxfun:
            break
        step *= 2.0
        trial = evaluate((x + step * d).clamp_(lo, hi))  # (1, 3, H, W)
        if not trial.f < best.f:
            break
        best = trial
    return best


def _line_search(evaluate: _Evaluator, cur: _Point, d: torch.Tensor, step: float, lo: float, hi: float,
                 maxfun: int, max_backtracks: int) -> _Point | None:
    """Backtrack from ``step`` along the projected path until the Armijo condition holds; None
    when it never does (within ``max_backtracks`` trials and ``maxfun`` evaluations)."""
    for _ in range(max_backtracks):
        if evaluate.count >= maxfun:
            return None
        trial = evaluate((cur.x + step * d).clamp_(lo, hi))  # (1, 3, H, W): the projected path
        if trial.f <= cur.f + ARMIJO_C1 * float(_dot(cur.g, trial.x - cur.x)):
            return trial
        step *= BACKTRACK
    return None


def minimize_box_on_device(fun: DeviceFunAndGrad, x0: torch.Tensor, lo: float, hi: float, *, maxiter: int,
                           maxfun: int, m: int, callback: Callable[[int], None] | None = None,
                           max_backtracks: int = 20) -> DeviceResult:
    """Minimize ``fun`` over ``lo <= x <= hi`` from ``x0`` for at most ``maxiter`` iterations,
    stopping early once ``maxfun`` evaluations were made or no descent is left. After every
    iteration ``callback(k)`` gets the number (1-based) of the evaluation whose point was accepted,
    so the caller can find that point's losses among what ``fun`` computed."""
    evaluate = _Evaluator(fun)
    cur = evaluate(x0.detach().clamp(lo, hi).clone())  # x: (1, 3, H, W)
    nit = 0
    pairs: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=m)
    sd_move = 0.0  # mean |pixel change| of the last accepted gradient step
    while nit < maxiter and evaluate.count < maxfun:
        x, g = cur.x, cur.g
        at_lo, at_hi = x <= lo + BINDING_EPS, x >= hi - BINDING_EPS
        binding = (at_lo & (g > 0)) | (at_hi & (g < 0))  # (1, 3, H, W): held at their bound
        free = (~binding).to(x.dtype)
        d = _two_loop(g * free, pairs) * free  # (1, 3, H, W)
        if pairs and not float(_dot(g, d)) < 0:  # the pairs give no descent: restart from the gradient
            pairs.clear()
        if not pairs:
            d = -g * free
            if not float(_dot(g, d)) < 0:
                break  # every pixel is held at a bound: a stationary point of the box
        # the quasi-Newton step is scaled already; a gradient step moves the average pixel by
        # 1 gray level at first, by twice its last move after that
        move = 2.0 * sd_move if sd_move else 1.0
        step = 1.0 if pairs else move * d.numel() / float(d.abs().sum())
        new = _line_search(evaluate, cur, d, step, lo, hi, maxfun, max_backtracks)
        if new is None:
            if pairs:  # the quasi-Newton direction failed: forget the pairs, try the gradient
                pairs.clear()
                continue
            break  # not even a gradient step descends: done
        if not pairs:  # a gradient step knows nothing of the scale: double it while the loss falls
            new = _extrapolate(evaluate, x, d, step, new, lo, hi, maxfun)
            sd_move = float((new.x - x).abs().mean())
        s, y = new.x - x, new.g - g  # (1, 3, H, W) each
        sy = float(_dot(s, y))
        if sy > 1e-10 * float(_dot(y, y)):  # keep only pairs with positive curvature
            pairs.append((s, y, 1.0 / sy))
        cur = new
        nit += 1
        if callback is not None:
            callback(cur.k)
    return DeviceResult(x=cur.x, nit=nit, nfev=evaluate.count, k=cur.k)


__all__ = ["DeviceFunAndGrad", "DeviceResult", "minimize_box_on_device"]
