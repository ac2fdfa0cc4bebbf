"""Box-constrained L-BFGS-B on SciPy's compiled routine, without SciPy's per-variable set-up.

Byrd, Lu, Nocedal & Zhu 1995, "A Limited Memory Algorithm for Bound Constrained Optimization"
(SIAM J. Sci. Comput. 16(5)); Zhu, Byrd, Lu & Nocedal 1997, "Algorithm 778: L-BFGS-B"
(ACM TOMS 23(4)), whose reverse-communication interface (``setulb``: the caller evaluates
``f`` and ``g`` whenever the routine asks, then calls it again) SciPy compiles.

Why not ``scipy.optimize.minimize(method="L-BFGS-B")``: before its first iteration it converts
the bounds between representations with Python loops over every variable, and then sets up
the per-variable bound codes in another Python loop. For an image's pixels that is most of a
VGG evaluation: 1.0 s at 256 px, 3.6 s at 512 px and 15 s at 1024 px per call (one thread,
the development machine), paid again by every coarse-to-fine level and every tile. Here one
box ``[lo, hi]`` holds for every variable, so the set-up is three ``numpy.full`` calls.

The iteration itself is SciPy's: the same compiled routine, called with the same workspace and
the same stopping rules as ``minimize`` (``maxiter``, ``maxfun``, ``ftol=0``, ``gtol=0``), so
the iterates are identical (``tests/engine/test_lbfgsb.py`` compares them), and so are the
evaluations: a point asked for twice is answered from the last evaluation, as ``minimize``'s
memo does. ``setulb`` is not public SciPy API and trusts its arrays' sizes, so it is driven
only on the SciPy versions whose routine was read (1.15-1.17: the C translation; before 1.15 it
was Fortran with string task codes); on any other :func:`minimize_box` falls back to
``minimize``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: f and its gradient at x (float64, shape (n,)); must not keep a reference to x.
FunAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]

# setulb's task codes (task[0]) and stop reasons (task[1]), SciPy >= 1.15.
_FG, _NEW_X, _STOP = 3, 1, 5
_MAXFUN, _MAXITER = 502, 504
_BOTH_BOUNDS = 2  # nbd: the variable has a lower and an upper bound


@dataclass(frozen=True)
class BoxResult:
    x: np.ndarray  # (n,) float64, inside [lo, hi]
    nit: int  # iterations
    nfev: int  # evaluations of f and g
    driver: str  # "setulb" (this module's loop) or "minimize" (SciPy's fallback)


@functools.cache
def _compiled_setulb() -> Callable | None:
    """SciPy's compiled ``setulb`` when it has the interface this module drives, else None.

    Checked once per process by solving a two-variable problem with a known answer."""
    try:
        import scipy
        from scipy.optimize import _lbfgsb
    except ImportError:  # pragma: no cover - scipy is a dependency
        return None
    major, minor = (int(p) for p in scipy.__version__.split(".")[:2])
    setulb = getattr(_lbfgsb, "setulb", None)
    # The routine trusts the sizes of the arrays it is given: only versions whose interface and
    # workspace sizes were read are driven (1.15-1.17: the C translation); any other falls back.
    if not (1, 15) <= (major, minor) < (1, 18) or setulb is None:
        return None
    target = np.array([3.0, -2.0])  # the minimum of |x - target|^2 over [-1, 1]^2 is (1, -1)
    try:
        res = _drive(setulb, lambda x: (float(((x - target) ** 2).sum()), 2 * (x - target)), np.zeros(2),
                     -1.0, 1.0, maxiter=20, maxfun=60, m=5, callback=None, maxls=20)
    except Exception:  # any failure of the probe means: use minimize
        return None
    return setulb if np.allclose(res.x, [1.0, -1.0]) else None


def minimize_box(fun: FunAndGrad, x0: np.ndarray, lo: float, hi: float, *, maxiter: int, maxfun: int, m: int,
                 callback: Callable[[], None] | None = None, maxls: int = 20) -> BoxResult:
    """Minimize ``fun`` over ``lo <= x <= hi`` (every variable the same box) from ``x0`` (n,).

    Runs at most ``maxiter`` iterations and stops once more than ``maxfun`` evaluations were made
    (checked between iterations, as SciPy does); never stops on a tolerance (``ftol = gtol = 0``).
    ``m`` is the number of correction pairs; ``callback`` runs after every iteration.
    """
    setulb = _compiled_setulb()
    if setulb is None:
        return _scipy_minimize(fun, x0, lo, hi, maxiter=maxiter, maxfun=maxfun, m=m, callback=callback, maxls=maxls)
    return _drive(setulb, fun, x0, lo, hi, maxiter=maxiter, maxfun=maxfun, m=m, callback=callback, maxls=maxls)


def _drive(setulb: Callable, fun: FunAndGrad, x0: np.ndarray, lo: float, hi: float, *, maxiter: int, maxfun: int,
           m: int, callback: Callable[[], None] | None, maxls: int) -> BoxResult:
    n = x0.size
    x = np.clip(np.asarray(x0, dtype=np.float64).ravel(), lo, hi)
    low, upp = np.full(n, lo, np.float64), np.full(n, hi, np.float64)
    nbd = np.full(n, _BOTH_BOUNDS, np.int32)
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros(n, np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, np.int32)
    task, ln_task = np.zeros(2, np.int32), np.zeros(2, np.int32)
    lsave, isave, dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29, np.float64)
    factr = pgtol = 0.0
    nit = nfev = 0
    last_x: np.ndarray | None = None  # the last evaluated point, with its f and g
    last_f, last_g = f, g
    while True:
        setulb(m, x, low, upp, nbd, f, g, factr, pgtol, wa, iwa, task, lsave, isave, dsave, maxls, ln_task)
        if task[0] == _FG:  # the routine wants f and g at x
            if last_x is not None and np.array_equal(x, last_x):
                f, g = last_f.copy(), last_g.copy()  # asked again at the same point (a stalled line search):
                continue  # minimize answers from its memo without evaluating, and so does this loop
            fx, gx = fun(x.copy())
            nfev += 1
            f = np.array(fx, dtype=np.float64)
            g = np.asarray(gx, dtype=np.float64).ravel()
            last_x, last_f, last_g = x.copy(), f.copy(), g.copy()
        elif task[0] == _NEW_X:  # an iteration ended
            nit += 1
            if callback is not None:
                callback()
            if nit >= maxiter:
                task[0], task[1] = _STOP, _MAXITER
            elif nfev > maxfun:
                task[0], task[1] = _STOP, _MAXFUN
        else:  # converged, stopped, or cannot go on: x holds the last iterate
            break
    return BoxResult(x=np.clip(x, lo, hi), nit=nit, nfev=nfev, driver="setulb")


def _scipy_minimize(fun: FunAndGrad, x0: np.ndarray, lo: float, hi: float, *, maxiter: int, maxfun: int, m: int,
                    callback: Callable[[], None] | None, maxls: int) -> BoxResult:
    from scipy.optimize import Bounds, minimize

    res = minimize(fun, np.asarray(x0, dtype=np.float64).ravel(), jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi),
                   callback=(lambda *_a: callback()) if callback is not None else None,
                   options={"maxiter": maxiter, "maxfun": maxfun, "maxcor": m, "ftol": 0.0, "gtol": 0.0,
                            "maxls": maxls})
    return BoxResult(x=np.clip(res.x, lo, hi), nit=int(res.nit), nfev=int(res.nfev), driver="minimize")


__all__ = ["BoxResult", "FunAndGrad", "minimize_box"]
