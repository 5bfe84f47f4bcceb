"""The Moré–Garbow–Hillstrom (1981) test set for unconstrained optimization.

The 35 problems of Moré, Garbow & Hillstrom, "Testing unconstrained optimization
software", *ACM TOMS* 7(1):17–41 (1981), written from the formulas of the paper's
§3 as residual functions ``r: R^n -> R^m``. The paper's objective is

.. math::

    f(x) = \\lVert r(x) \\rVert^2 = \\sum_{i=1}^m r_i(x)^2,

and every ``f_star`` here is in those units. ``nj.least_squares`` minimizes
``½‖r‖²``, so its ``result.value`` is ``f / 2``; :func:`objective` returns the
paper's ``f`` for ``nj.minimize``.

Each problem carries the paper's standard starting point ``x0`` (its "ξ"), the
optimal value ``f_star`` the paper reports (six significant digits, as printed),
the minimizer ``x_star`` where the paper gives one (exactly, or in closed form:
Brown almost-linear's ``α`` is the root the paper names, Powell badly scaled's
minimizer is the paper's 2 × 2 system solved to rounding), and ``f_local``, the
values of other local minima the paper reports (some at infinity).

The 40 cases (:data:`CASES`) are the 35 problems at one dimension each plus the
dimension variants for which the paper reports a distinct optimal value:
Watson at n = 6, 9, 12; Penalty I and Penalty II at n = 4, 10; Chebyquad at
n = m = 8, 10. The other variable-dimension problems use n = 10 (Extended Powell
singular: n = 12, a multiple of 4), the three linear functions n = 5, m = 10
(MINPACK-1's test dimensions), Gulf research and development m = 99 (the paper
allows 3 ≤ m ≤ 100; at m = 100 the last residual's ``x3``-derivative at the
minimizer is ``0·log 0``). :func:`problem` builds any problem at other dimensions.

Conventions: one-based indices in the formulas (``i = 1..m``, ``j = 1..n``) as in
the paper; residuals are pure ``jnp`` on flat arrays, in the dtype of ``x`` (data
constants are cast to it), so they run in float32 and float64 and under ``jit``,
``vmap`` and ``jacfwd``.

Two printing errors of the paper are corrected, as is standard: Gulf research
and development reads ``|y_i − x_2|`` (the paper prints ``|y_i m i x_2|``), and
the Osborne 2 data are the MINPACK ones.

References:
    J. J. Moré, B. S. Garbow, K. E. Hillstrom (1981). Testing unconstrained
    optimization software. ACM Trans. Math. Softw. 7(1), 17–41 (§3, problems
    1–35; the optimal values are given with each problem).
    J. J. Moré, B. S. Garbow, K. E. Hillstrom (1980). User guide for MINPACK-1.
    Argonne National Laboratory report ANL-80-74 (ch. 4, the test dimensions of
    the linear and Watson functions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CASES",
    "MGHProblem",
    "case",
    "names",
    "objective",
    "outcome",
    "problem",
]

Array = jax.Array


class MGHProblem(NamedTuple):
    """One case of the Moré–Garbow–Hillstrom test set.

    Attributes:
      key: unique case name, e.g. ``"20-watson-n9"``.
      number: the problem's number in the paper (1–35).
      name: the paper's name of the function.
      n: number of variables.
      m: number of residuals.
      residual: ``x (n,) -> r (m,)``; ``f = ‖r‖²``.
      x0: the paper's standard starting point, float64 ``(n,)``.
      f_star: the optimal value of ``f = ‖r‖²`` reported by the paper.
      x_star: a minimizer with ``f(x_star) = f_star`` where the paper gives one,
        else ``None``.
      f_local: values of ``f`` at other local minima the paper reports.
    """

    key: str
    number: int
    name: str
    n: int
    m: int
    residual: Callable[[Array], Array]
    x0: np.ndarray
    f_star: float
    x_star: np.ndarray | None = None
    f_local: tuple[float, ...] = ()


def objective(p: MGHProblem) -> Callable[[Array], Array]:
    """The paper's objective ``f(x) = ‖r(x)‖²`` of a problem."""

    def f(x):
        r = p.residual(x)
        return jnp.dot(r, r)

    return f


SOLVED_RTOL = 1e-5
"""Relative tolerance on ``f*`` of :func:`outcome` (the paper prints six digits)."""
SOLVED_ATOL = 1e-10
"""Absolute tolerance on ``f = ‖r‖²`` of :func:`outcome` (the floor for ``f* = 0``)."""


def outcome(p: MGHProblem, f: float, *, atol: float = SOLVED_ATOL) -> str:
    """Classify a final value ``f = ‖r(x)‖²`` as ``"solved"``, ``"local"`` or ``"failed"``.

    ``"solved"`` when ``f <= f* + SOLVED_RTOL·|f*| + SOLVED_ATOL``; ``"local"`` when
    ``|f − f_loc|`` is within the same tolerance of one of the paper's other local
    minima ``f_loc`` (a solve that ends there has converged, to a minimizer other
    than the one the paper tabulates); ``"failed"`` otherwise, NaN included.

    The relative part is the tightest the paper's values support: ``f*`` is printed
    to six significant digits, a relative rounding error of up to 5e-6 (Jennrich
    and Sampson's exact optimum is 124.36218, printed 124.362). The absolute part
    is the floor for the zero-residual problems and for the tiny ``f*`` of Gaussian
    and Watson (n = 12): a solve that has reached ``‖r‖ <= 1e-5`` there counts.
    A value below ``f*`` counts as solved: the paper's ``f*`` is not always the
    global minimum (from the standard start, a trust-region method reaches
    f ≈ 4.77271e-3 on Chebyquad n = 10, below the paper's 6.50395e-3).
    The test is on ``f`` alone, computed from the returned point: it needs nothing
    from the solver but its answer.

    Args:
      p: the case.
      f: ``‖r(x)‖²`` at the point a solver returned.
      atol: the absolute part (a looser floor, e.g. 1e-6, accepts the stops of
        solvers whose default gradient tolerance is loose, such as scipy's 1e-5).
    """
    f = float(f)
    if not math.isfinite(f):
        return "failed"

    def tol(target):
        return SOLVED_RTOL * abs(target) + atol

    if f <= p.f_star + tol(p.f_star):
        return "solved"
    if any(abs(f - v) <= tol(v) for v in p.f_local):
        return "local"
    return "failed"


def _c(values, x):
    """Data constants in the dtype of ``x``."""
    return jnp.asarray(values, dtype=x.dtype)


def _idx(k: int, x) -> Array:
    """``1, 2, …, k`` in the dtype of ``x``."""
    return jnp.arange(1, k + 1, dtype=x.dtype)


# --------------------------------------------------------------------- problems 1–19


class _Spec(NamedTuple):
    name: str
    n: int
    m: int
    residual: Callable[[Array], Array]
    x0: list[float]
    f_star: float
    x_star: list[float] | None = None
    f_local: tuple[float, ...] = ()


def _rosenbrock():
    def r(x):
        return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    return _Spec("Rosenbrock", 2, 2, r, [-1.2, 1.0], 0.0, [1.0, 1.0])


def _freudenstein_roth():
    def r(x):
        return jnp.stack(
            [
                -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
                -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
            ]
        )

    return _Spec("Freudenstein and Roth", 2, 2, r, [0.5, -2.0], 0.0, [5.0, 4.0], (48.9842,))


def _powell_badly_scaled_minimizer() -> list[float]:
    # x1·x2 = 1e-4 and exp(−x1) + exp(−x2) = 1.0001: Newton on x1 with x2 = 1e-4/x1,
    # from the paper's x1 ≈ 1.098e-5 (converges in a few steps to rounding).
    x1 = 1.098e-5
    for _ in range(50):
        x2 = 1e-4 / x1
        g = math.exp(-x1) + math.exp(-x2) - 1.0001
        dg = -math.exp(-x1) + math.exp(-x2) * 1e-4 / x1**2
        x1 -= g / dg
    return [x1, 1e-4 / x1]


def _powell_badly_scaled():
    def r(x):
        return jnp.stack([1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])

    return _Spec("Powell badly scaled", 2, 2, r, [0.0, 1.0], 0.0, _powell_badly_scaled_minimizer())


def _brown_badly_scaled():
    def r(x):
        return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])

    return _Spec("Brown badly scaled", 2, 3, r, [1.0, 1.0], 0.0, [1e6, 2e-6])


def _beale():
    y = [1.5, 2.25, 2.625]

    def r(x):
        i = _idx(3, x)
        return _c(y, x) - x[0] * (1.0 - x[1] ** i)

    return _Spec("Beale", 2, 3, r, [1.0, 1.0], 0.0, [3.0, 0.5])


def _jennrich_sampson(m: int = 10):
    def r(x):
        i = _idx(m, x)
        return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))

    if m != 10:
        raise ValueError(f"Jennrich and Sampson: the paper gives f* for m = 10 only, got {m}")
    return _Spec("Jennrich and Sampson", 2, m, r, [0.3, 0.4], 124.362)


def _helical_valley():
    def r(x):
        # θ = arctan(x2/x1)/(2π), plus 1/2 when x1 < 0 (the paper's definition; at
        # x1 = 0, the limit ±1/4 by the sign of x2, as MINPACK's test code).
        safe = jnp.where(x[0] == 0, 1.0, x[0])
        theta = jnp.arctan(x[1] / safe) / (2.0 * jnp.pi) + jnp.where(x[0] < 0, 0.5, 0.0)
        theta = jnp.where(x[0] == 0, jnp.where(x[1] >= 0, 0.25, -0.25), theta)
        return jnp.stack(
            [10.0 * (x[2] - 10.0 * theta), 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0), x[2]]
        )

    return _Spec("Helical valley", 3, 3, r, [-1.0, 0.0, 0.0], 0.0, [1.0, 0.0, 0.0])


_BARD_Y = [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]


def _bard():
    def r(x):
        u = _idx(15, x)
        v = 16.0 - u
        w = jnp.minimum(u, v)
        return _c(_BARD_Y, x) - (x[0] + u / (v * x[1] + w * x[2]))

    # The second local minimum, f = 17.4286, is at (0.8406…, −∞, −∞).
    return _Spec("Bard", 3, 15, r, [1.0, 1.0, 1.0], 8.21487e-3, None, (17.4286,))


_GAUSSIAN_Y = [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989]
_GAUSSIAN_Y = _GAUSSIAN_Y + _GAUSSIAN_Y[-2::-1]  # symmetric: y_{16−i} = y_i


def _gaussian():
    def r(x):
        t = (8.0 - _idx(15, x)) / 2.0
        return x[0] * jnp.exp(-x[1] * (t - x[2]) ** 2 / 2.0) - _c(_GAUSSIAN_Y, x)

    return _Spec("Gaussian", 3, 15, r, [0.4, 1.0, 0.0], 1.12793e-8)


_MEYER_Y = [34780, 28610, 23650, 19630, 16370, 13720, 11540, 9744,
            8261, 7030, 6005, 5147, 4427, 3820, 3307, 2872]  # fmt: skip


def _meyer():
    def r(x):
        t = 45.0 + 5.0 * _idx(16, x)
        return x[0] * jnp.exp(x[1] / (t + x[2])) - _c(_MEYER_Y, x)

    return _Spec("Meyer", 3, 16, r, [0.02, 4000.0, 250.0], 87.9458)


def _gulf(m: int = 99):
    if not 3 <= m <= 100:
        raise ValueError(f"Gulf research and development: need 3 <= m <= 100, got {m}")
    t_np = np.arange(1, m + 1) / 100.0
    y_np = 25.0 + (-50.0 * np.log(t_np)) ** (2.0 / 3.0)

    def r(x):
        return jnp.exp(-(jnp.abs(_c(y_np, x) - x[1]) ** x[2]) / x[0]) - _c(t_np, x)

    return _Spec("Gulf research and development", 3, m, r, [5.0, 2.5, 0.15], 0.0, [50.0, 25.0, 1.5])


def _box_3d(m: int = 10):
    def r(x):
        t = 0.1 * _idx(m, x)
        return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * (jnp.exp(-t) - jnp.exp(-10.0 * t))

    # Also f = 0 at (10, 1, −1) and wherever x1 = x2, x3 = 0.
    return _Spec("Box three-dimensional", 3, m, r, [0.0, 10.0, 20.0], 0.0, [1.0, 10.0, 1.0])


def _powell_singular():
    def r(x):
        return jnp.stack(
            [
                x[0] + 10.0 * x[1],
                math.sqrt(5.0) * (x[2] - x[3]),
                (x[1] - 2.0 * x[2]) ** 2,
                math.sqrt(10.0) * (x[0] - x[3]) ** 2,
            ]
        )

    return _Spec("Powell singular", 4, 4, r, [3.0, -1.0, 0.0, 1.0], 0.0, [0.0, 0.0, 0.0, 0.0])


def _wood():
    def r(x):
        return jnp.stack(
            [
                10.0 * (x[1] - x[0] ** 2),
                1.0 - x[0],
                math.sqrt(90.0) * (x[3] - x[2] ** 2),
                1.0 - x[2],
                math.sqrt(10.0) * (x[1] + x[3] - 2.0),
                (x[1] - x[3]) / math.sqrt(10.0),
            ]
        )

    return _Spec("Wood", 4, 6, r, [-3.0, -1.0, -3.0, -1.0], 0.0, [1.0, 1.0, 1.0, 1.0])


_KOWALIK_Y = [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627,
              0.0456, 0.0342, 0.0323, 0.0235, 0.0246]  # fmt: skip
_KOWALIK_U = [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]


def _kowalik_osborne():
    def r(x):
        u = _c(_KOWALIK_U, x)
        return _c(_KOWALIK_Y, x) - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])

    # The second local minimum, f = 1.02734e-3, is at (+∞, −14.07…, −∞, −∞).
    x0 = [0.25, 0.39, 0.415, 0.39]
    return _Spec("Kowalik and Osborne", 4, 11, r, x0, 3.07505e-4, f_local=(1.02734e-3,))


def _brown_dennis(m: int = 20):
    if m != 20:
        raise ValueError(f"Brown and Dennis: the paper gives f* for m = 20 only, got {m}")

    def r(x):
        t = _idx(m, x) / 5.0
        return (x[0] + t * x[1] - jnp.exp(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2

    return _Spec("Brown and Dennis", 4, m, r, [25.0, 5.0, -5.0, -1.0], 85822.2)


_OSBORNE1_Y = [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
               0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
               0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411,
               0.406]  # fmt: skip


def _osborne1():
    def r(x):
        t = 10.0 * (_idx(33, x) - 1.0)
        return _c(_OSBORNE1_Y, x) - (x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4]))

    return _Spec("Osborne 1", 5, 33, r, [0.5, 1.5, -1.0, 0.01, 0.02], 5.46489e-5)


def _biggs_exp6(m: int = 13):
    if m != 13:
        raise ValueError(f"Biggs EXP6: the paper gives the local minimum for m = 13 only, got {m}")

    def r(x):
        t = 0.1 * _idx(m, x)
        y = jnp.exp(-t) - 5.0 * jnp.exp(-10.0 * t) + 3.0 * jnp.exp(-4.0 * t)
        return x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - y

    x0 = [1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    x_star = [1.0, 10.0, 1.0, 5.0, 4.0, 3.0]
    return _Spec("Biggs EXP6", 6, m, r, x0, 0.0, x_star, f_local=(5.65565e-3,))


_OSBORNE2_Y = [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746,
               0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649,
               0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395,
               0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653,
               0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739,
               0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]  # fmt: skip


def _osborne2():
    def r(x):
        t = (_idx(65, x) - 1.0) / 10.0
        model = (
            x[0] * jnp.exp(-t * x[4])
            + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
            + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
            + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
        )
        return _c(_OSBORNE2_Y, x) - model

    x0 = [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5]
    return _Spec("Osborne 2", 11, 65, r, x0, 4.01377e-2)


# -------------------------------------------------------------------- problems 20–35

_WATSON_F = {6: 2.28767e-3, 9: 1.39976e-6, 12: 4.72238e-10}


def _watson(n: int = 6):
    if n not in _WATSON_F:
        raise ValueError(f"Watson: the paper gives f* for n in {sorted(_WATSON_F)}, got {n}")

    def r(x):
        t = _idx(29, x) / 29.0
        j = jnp.arange(n, dtype=x.dtype)  # powers 0..n−1
        powers = t[:, None] ** j[None, :]  # t_i^{j−1}, (29, n)
        # Σ_{j≥2} (j−1) x_j t^{j−2}: coefficient k·x_{k+1} on t^{k−1}, k = 1..n−1.
        deriv = powers[:, : n - 1] @ (j[1:] * x[1:])
        value = powers @ x
        head = deriv - value**2 - 1.0
        return jnp.concatenate([head, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])

    return _Spec("Watson", n, 31, r, [0.0] * n, _WATSON_F[n])


def _extended_rosenbrock(n: int = 10):
    if n % 2:
        raise ValueError(f"Extended Rosenbrock: n must be even, got {n}")

    def r(x):
        odd, even = x[0::2], x[1::2]
        return jnp.stack([10.0 * (even - odd**2), 1.0 - odd], axis=1).reshape(-1)

    return _Spec("Extended Rosenbrock", n, n, r, [-1.2, 1.0] * (n // 2), 0.0, [1.0] * n)


def _extended_powell(n: int = 12):
    if n % 4:
        raise ValueError(f"Extended Powell singular: n must be a multiple of 4, got {n}")

    def r(x):
        a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
        blocks = jnp.stack(
            [
                a + 10.0 * b,
                math.sqrt(5.0) * (c - d),
                (b - 2.0 * c) ** 2,
                math.sqrt(10.0) * (a - d) ** 2,
            ],
            axis=1,
        )
        return blocks.reshape(-1)

    return _Spec(
        "Extended Powell singular", n, n, r, [3.0, -1.0, 0.0, 1.0] * (n // 4), 0.0, [0.0] * n
    )


_PENALTY1_F = {4: 2.24997e-5, 10: 7.08765e-5}


def _penalty1(n: int = 4):
    if n not in _PENALTY1_F:
        raise ValueError(f"Penalty I: the paper gives f* for n in {sorted(_PENALTY1_F)}, got {n}")
    a = 1e-5

    def r(x):
        return jnp.concatenate([math.sqrt(a) * (x - 1.0), (jnp.sum(x**2) - 0.25)[None]])

    return _Spec("Penalty I", n, n + 1, r, [float(j) for j in range(1, n + 1)], _PENALTY1_F[n])


_PENALTY2_F = {4: 9.37629e-6, 10: 2.93660e-4}


def _penalty2(n: int = 4):
    if n not in _PENALTY2_F:
        raise ValueError(f"Penalty II: the paper gives f* for n in {sorted(_PENALTY2_F)}, got {n}")
    a = 1e-5
    i = np.arange(2, n + 1)
    y_np = np.exp(i / 10.0) + np.exp((i - 1) / 10.0)  # y_i, i = 2..n

    def r(x):
        e = jnp.exp(x / 10.0)
        weights = jnp.arange(n, 0, -1, dtype=x.dtype)  # n − j + 1
        return jnp.concatenate(
            [
                (x[0] - 0.2)[None],
                math.sqrt(a) * (e[1:] + e[:-1] - _c(y_np, x)),  # i = 2..n
                math.sqrt(a) * (e[1:] - math.exp(-0.1)),  # i = n+1..2n−1
                (jnp.sum(weights * x**2) - 1.0)[None],
            ]
        )

    return _Spec("Penalty II", n, 2 * n, r, [0.5] * n, _PENALTY2_F[n])


def _variably_dimensioned(n: int = 10):
    def r(x):
        s = jnp.sum(_idx(n, x) * (x - 1.0))
        return jnp.concatenate([x - 1.0, jnp.stack([s, s**2])])

    x0 = [1.0 - j / n for j in range(1, n + 1)]
    return _Spec("Variably dimensioned", n, n + 2, r, x0, 0.0, [1.0] * n)


def _trigonometric(n: int = 10):
    def r(x):
        return n - jnp.sum(jnp.cos(x)) + _idx(n, x) * (1.0 - jnp.cos(x)) - jnp.sin(x)

    # The paper reports f* = 0 only. From x0 at n = 10, MINPACK's Levenberg–Marquardt
    # ends in a local minimum with f = 2.79506e-5 (scipy ``least_squares(method="lm")``).
    local = (2.79506e-5,) if n == 10 else ()
    return _Spec("Trigonometric", n, n, r, [1.0 / n] * n, 0.0, None, local)


def _brown_almost_linear_alpha(n: int) -> float:
    # The root in (0, 1) of n α^n − (n+1) α^{n−1} + 1 = 0 other than α = 1 (the
    # paper's minimizer is (α, …, α, α^{1−n})); the polynomial is positive at 0 and
    # decreases on [0, 1 − 1/n²] to its minimum there, which is negative, so bisect.
    def p(a):
        return n * a**n - (n + 1) * a ** (n - 1) + 1.0

    lo, hi = 0.0, 1.0 - 1.0 / n**2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if p(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _brown_almost_linear(n: int = 10):
    def r(x):
        head = x[:-1] + jnp.sum(x) - (n + 1.0)
        return jnp.concatenate([head, (jnp.prod(x) - 1.0)[None]])

    alpha = _brown_almost_linear_alpha(n)
    x_star = [alpha] * (n - 1) + [alpha ** (1 - n)]
    # Also f = 1 at (0, …, 0, n + 1).
    return _Spec("Brown almost-linear", n, n, r, [0.5] * n, 0.0, x_star, (1.0,))


def _discrete_grid(n: int, x):
    h = 1.0 / (n + 1)
    return h, _idx(n, x) * h


def _discrete_bv_x0(n: int) -> list[float]:
    t = np.arange(1, n + 1) / (n + 1)
    return list(t * (t - 1.0))


def _discrete_boundary_value(n: int = 10):
    def r(x):
        h, t = _discrete_grid(n, x)
        padded = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
        return 2.0 * x - padded[:-2] - padded[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0

    return _Spec("Discrete boundary value", n, n, r, _discrete_bv_x0(n), 0.0)


def _discrete_integral_equation(n: int = 10):
    def r(x):
        h, t = _discrete_grid(n, x)
        cube = (x + t + 1.0) ** 3
        lower = jnp.cumsum(t * cube)  # Σ_{j ≤ i} t_j (x_j + t_j + 1)³
        upper_all = jnp.cumsum(((1.0 - t) * cube)[::-1])[::-1]  # Σ_{j ≥ i}
        upper = jnp.concatenate([upper_all[1:], jnp.zeros(1, x.dtype)])  # Σ_{j > i}
        return x + h * ((1.0 - t) * lower + t * upper) / 2.0

    return _Spec("Discrete integral equation", n, n, r, _discrete_bv_x0(n), 0.0)


def _broyden_tridiagonal(n: int = 10):
    def r(x):
        padded = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
        return (3.0 - 2.0 * x) * x - padded[:-2] - 2.0 * padded[2:] + 1.0

    return _Spec("Broyden tridiagonal", n, n, r, [-1.0] * n, 0.0)


def _broyden_banded(n: int = 10, ml: int = 5, mu: int = 1):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    band = ((j != i) & (j >= i - ml) & (j <= i + mu)).astype(np.float64)  # J_i

    def r(x):
        return x * (2.0 + 5.0 * x**2) + 1.0 - _c(band, x) @ (x * (1.0 + x))

    return _Spec("Broyden banded", n, n, r, [-1.0] * n, 0.0)


def _linear_full_rank(n: int = 5, m: int = 10):
    if m < n:
        raise ValueError(f"Linear function - full rank: need m >= n, got n={n}, m={m}")

    def r(x):
        s = 2.0 / m * jnp.sum(x)
        return jnp.concatenate([x - s - 1.0, jnp.full(m - n, -s - 1.0, x.dtype)])

    return _Spec("Linear function - full rank", n, m, r, [1.0] * n, float(m - n), [-1.0] * n)


def _linear_rank1(n: int = 5, m: int = 10):
    if m < n:
        raise ValueError(f"Linear function - rank 1: need m >= n, got n={n}, m={m}")

    def r(x):
        return _idx(m, x) * jnp.dot(_idx(n, x), x) - 1.0

    # Minimal wherever Σ j x_j = 3/(2m + 1); one such point:
    x_star = [3.0 / (2 * m + 1)] + [0.0] * (n - 1)
    return _Spec(
        "Linear function - rank 1", n, m, r, [1.0] * n, m * (m - 1) / (2.0 * (2 * m + 1)), x_star
    )


def _linear_rank1_zero(n: int = 5, m: int = 10):
    if m < n or n < 3:
        raise ValueError(
            f"Linear function - rank 1 with zero columns and rows: need m >= n >= 3, "
            f"got n={n}, m={m}"
        )

    def r(x):
        j = _idx(n, x)
        s = jnp.dot(j[1:-1], x[1:-1])  # Σ_{j=2}^{n−1} j x_j
        inner = (_idx(m - 2, x)) * s - 1.0  # (i − 1) s − 1, i = 2..m−1
        minus_one = -jnp.ones(1, x.dtype)
        return jnp.concatenate([minus_one, inner, minus_one])

    # Minimal wherever Σ_{j=2}^{n−1} j x_j = 3/(2m − 3); one such point:
    x_star = [0.0, 3.0 / (2.0 * (2 * m - 3))] + [0.0] * (n - 2)
    f_star = (m**2 + 3 * m - 6) / (2.0 * (2 * m - 3))
    return _Spec(
        "Linear function - rank 1 with zero columns and rows", n, m, r, [1.0] * n, f_star, x_star
    )


_CHEBYQUAD_F = {**{k: 0.0 for k in range(1, 8)}, 8: 3.51687e-3, 9: 0.0, 10: 6.50395e-3}


def _chebyquad(n: int = 8, m: int | None = None):
    m = n if m is None else m
    if m != n or n not in _CHEBYQUAD_F:
        raise ValueError(f"Chebyquad: the paper gives f* for m = n in 1..10, got n={n}, m={m}")
    # ∫₀¹ T_i(2x − 1) dx = −1/(i² − 1) for even i, 0 for odd i.
    integral = [-1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0 for i in range(1, m + 1)]

    def r(x):
        y = 2.0 * x - 1.0  # shifted Chebyshev polynomials: T_i(2x − 1) on [0, 1]

        def step(carry, _):
            prev, cur = carry
            return (cur, 2.0 * y * cur - prev), cur

        _, ts = jax.lax.scan(step, (jnp.ones_like(y), y), None, length=m)  # T_1..T_m
        return jnp.mean(ts, axis=1) - _c(integral, x)

    x0 = [j / (n + 1.0) for j in range(1, n + 1)]
    return _Spec("Chebyquad", n, m, r, x0, _CHEBYQUAD_F[n])


_BUILDERS: dict[int, Callable[..., _Spec]] = {
    1: _rosenbrock,
    2: _freudenstein_roth,
    3: _powell_badly_scaled,
    4: _brown_badly_scaled,
    5: _beale,
    6: _jennrich_sampson,
    7: _helical_valley,
    8: _bard,
    9: _gaussian,
    10: _meyer,
    11: _gulf,
    12: _box_3d,
    13: _powell_singular,
    14: _wood,
    15: _kowalik_osborne,
    16: _brown_dennis,
    17: _osborne1,
    18: _biggs_exp6,
    19: _osborne2,
    20: _watson,
    21: _extended_rosenbrock,
    22: _extended_powell,
    23: _penalty1,
    24: _penalty2,
    25: _variably_dimensioned,
    26: _trigonometric,
    27: _brown_almost_linear,
    28: _discrete_boundary_value,
    29: _discrete_integral_equation,
    30: _broyden_tridiagonal,
    31: _broyden_banded,
    32: _linear_full_rank,
    33: _linear_rank1,
    34: _linear_rank1_zero,
    35: _chebyquad,
}


def _slug(name: str) -> str:
    keep = "".join(ch.lower() if ch.isalnum() else "-" for ch in name)
    return "-".join(part for part in keep.split("-") if part)


def problem(number: int, **dims: int) -> MGHProblem:
    """Problem ``number`` (1–35) of the paper, at its default or given dimensions.

    Args:
      number: the problem's number in Moré, Garbow & Hillstrom (1981).
      **dims: ``n`` and/or ``m`` for the variable-dimension problems (only those
        for which the paper reports ``f*``).

    Returns:
      The :class:`MGHProblem`; for problems 20–35 its ``key`` names ``n`` (and ``m``).

    Raises:
      KeyError: for a number outside 1–35.
      TypeError: for a dimension the problem does not take.
      ValueError: for dimensions the paper gives no optimal value for.
    """
    if number not in _BUILDERS:
        raise KeyError(f"mgh.problem: number must be in 1..35, got {number}")
    name, n, m, residual, x0, f_star, x_star, f_local = _BUILDERS[number](**dims)
    key = f"{number:02d}-{_slug(name)}"
    if number >= 20:  # the variable-dimension problems: the key names n (and m)
        key += f"-n{n}" + (f"-m{m}" if number in (32, 33, 34) else "")
    return MGHProblem(
        key=key,
        number=number,
        name=name,
        n=n,
        m=m,
        residual=residual,
        x0=np.asarray(x0, np.float64),
        f_star=float(f_star),
        x_star=None if x_star is None else np.asarray(x_star, np.float64),
        f_local=tuple(float(v) for v in f_local),
    )


_VARIANTS: dict[int, list[dict[str, int]]] = {
    20: [{"n": 6}, {"n": 9}, {"n": 12}],
    23: [{"n": 4}, {"n": 10}],
    24: [{"n": 4}, {"n": 10}],
    35: [{"n": 8}, {"n": 10}],
}

CASES: tuple[MGHProblem, ...] = tuple(
    problem(k, **dims) for k in sorted(_BUILDERS) for dims in _VARIANTS.get(k, [{}])
)
"""The 40 standard cases, in the paper's order (variants of a problem together)."""


def names() -> list[str]:
    """Keys of the 40 standard cases."""
    return [p.key for p in CASES]


def case(key: str) -> MGHProblem:
    """A standard case by its key (see :func:`names`)."""
    for p in CASES:
        if p.key == key:
            return p
    raise KeyError(f"mgh.case: unknown key {key!r}; valid keys: {', '.join(names())}")
