r"""Trust-region subproblem solvers.

Layer 2. Each solver approximately minimizes the quadratic model

.. math::

   m(p) = g^T p + \tfrac12 p^T H p \quad\text{subject to}\quad ‖p‖ <= Δ

and returns the *descent* step ``p`` (``p ≈ -H^{-1} g`` in the interior) together
with the predicted reduction ``m(0) - m(p) = -(gᵀp + ½ pᵀHp) >= 0``:

* :func:`cauchy_point` — minimizer of the model along ``-g`` (N&W Alg. 4.2),
* :func:`dogleg` — Powell's dogleg path through the Cauchy and Newton points
  (N&W §4.1), for positive definite ``H``,
* :func:`steihaug_cg` — truncated CG of Steihaug (1983) / Toint (1981) (N&W
  Alg. 7.2) on an operator: matrix-free, any curvature,
* :func:`trust_region_exact` — the nearly exact solution of Moré & Sorensen (1983)
  on a dense ``H`` through its eigendecomposition, including the hard case
  (N&W Alg. 4.3, §4.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax._checks import (
    check_count,
    check_nonnegative,
    check_positive,
    check_real_tree,
    check_same_structure,
)
from newtonjax._tree import (
    HIGHEST,
    PyTree,
    tree_all_finite,
    tree_axpy,
    tree_norm,
    tree_scale,
    tree_size,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)
from newtonjax.linalg._cg import SolverStatus, cg
from newtonjax.linalg._operators import (
    cast_like,
    check_matrix_and_rhs,
    real_dtype,
    status_code,
    symmetrize,
    wrap_operator,
)

__all__ = [
    "SteihaugResult",
    "steihaug_cg",
    "TrustRegionStepResult",
    "cauchy_point",
    "dogleg",
    "TrustRegionExactResult",
    "trust_region_exact",
]

Array = jax.Array
_RUNNING = -1


def _safe(x: Array) -> Array:
    """``x`` with zeros replaced by ones: a guard for divisions whose result is masked."""
    return jnp.where(x == 0, jnp.ones_like(x), x)


def _safe_norm(x: Array) -> Array:
    """Euclidean norm scaled by ``max|x|``, so that squaring neither overflows nor underflows."""
    m = jnp.max(jnp.abs(x))
    m_safe = jnp.where(m > 0, m, 1.0)
    return m * jnp.sqrt(jnp.sum((x / m_safe) ** 2))


def _boundary_taus(zz: Array, zd: Array, dd: Array, radius: Array) -> tuple[Array, Array]:
    r"""Roots ``τ_- <= 0 <= τ_+`` of ``‖z + τ d‖ = Δ`` for ``‖z‖ <= Δ``.

    Solves ``dd τ² + 2 zd τ + (zz - Δ²) = 0`` without cancellation: with
    ``s = sqrt(zd² - dd (zz - Δ²))`` and ``q = -(zd + sign(zd) s)``, the roots are
    ``q / dd`` and ``(zz - Δ²) / q`` (Press et al., Numerical Recipes §5.6).
    """
    c = zz - radius * radius
    disc = jnp.sqrt(jnp.maximum(zd * zd - dd * c, 0.0))
    pos_b = zd >= 0
    tau_plus = jnp.where(pos_b, -c / _safe(zd + disc), (disc - zd) / _safe(dd))
    tau_minus = jnp.where(pos_b, -(zd + disc) / _safe(dd), c / _safe(disc - zd))
    return jnp.maximum(tau_plus, 0.0), jnp.minimum(tau_minus, 0.0)


def _prepare_radius(fn: str, radius: Any, dtype: Any) -> Array:
    check_positive(fn, "radius", radius)
    return jnp.asarray(radius, dtype)


# --------------------------------------------------------------------------- Steihaug


class SteihaugResult(NamedTuple):
    """Result of :func:`steihaug_cg`.

    Attributes:
      step: the descent step ``p`` (pytree like ``g``), ``‖p‖ <= radius``.
      predicted_reduction: ``-(gᵀp + ½ pᵀHp) >= 0``, accumulated along the CG path
        without extra operator products.
      hits_boundary: bool, ``‖p‖ = radius`` (status ``BOUNDARY`` or
        ``NEGATIVE_CURVATURE``).
      status: int32 :class:`SolverStatus`: ``CONVERGED`` (interior, residual below
        tolerance), ``BOUNDARY``, ``NEGATIVE_CURVATURE`` (stopped on the boundary
        along a direction with ``dᵀHd <= 0``), ``MAX_STEPS`` (last interior iterate)
        or ``NONFINITE`` (last finite iterate).
      num_steps: int32, CG iterations (= operator products).
      residual_norm: ``‖g + H p‖`` of the returned step, from the CG recurrence.
    """

    step: PyTree
    predicted_reduction: Array
    hits_boundary: Array
    status: Array
    num_steps: Array
    residual_norm: Array


def steihaug_cg(
    matvec: Callable[[PyTree], PyTree],
    g: PyTree,
    radius: float | Array,
    *,
    rtol: float | Array | None = None,
    atol: float | Array = 0.0,
    max_steps: int | Array | None = None,
) -> SteihaugResult:
    r"""Steihaug–Toint truncated CG for ``min gᵀp + ½ pᵀHp`` s.t. ``‖p‖ <= Δ``.

    CG on ``H p = -g`` from ``p = 0`` (Nocedal & Wright 2006, Alg. 7.2), stopping

    * on a direction ``d`` of non-positive curvature ``dᵀHd <= 0``: returns
      ``z + τd`` on the boundary, with ``τ`` the root of ``‖z + τd‖ = Δ`` (either
      sign) of lower model value (``NEGATIVE_CURVATURE``);
    * when the next iterate would leave the region: returns ``z + τd`` with the
      positive root ``τ`` (``BOUNDARY``);
    * when ``‖r‖ = ‖g + Hz‖ <= max(rtol ‖g‖, atol)`` (``CONVERGED``, interior).

    The boundary roots are computed in the cancellation-free form. The model value
    is tracked along the path (each CG step lowers it by ``½ α ‖r‖²``), so
    ``predicted_reduction`` costs no extra operator product. The iterates grow
    monotonically in norm (N&W Thm. 7.3), so a step that is inside stays inside.
    Since CG starts from zero, the step is at least as good as the Cauchy point.

    Args:
      matvec: symmetric operator ``v -> H v`` on pytrees shaped like ``g`` (any
        curvature).
      g: the gradient, a pytree of real floating-point arrays.
      radius: trust-region radius ``Δ > 0``. May be traced (vmap over radii works).
      rtol: relative residual tolerance. ``None`` means the forcing term
        ``min(0.5, sqrt(‖g‖))`` of N&W eq. 7.3 (superlinear convergence of the
        outer trust-region iteration), as in ``scipy.optimize`` ``trust-ncg``.
      atol: absolute residual tolerance.
      max_steps: iteration limit; ``None`` means ``10 n``. May be traced.

    Returns:
      A :class:`SteihaugResult` ``(step, predicted_reduction, hits_boundary, status,
      num_steps, residual_norm)``.

    Raises:
      TypeError, ValueError: for a non-callable operator, a non-float ``g``, an
        operator output whose structure differs from ``g``, or invalid Python numbers.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import steihaug_cg
      >>> H = jnp.array([[2.0, 0.0], [0.0, 1.0]])
      >>> g = jnp.array([2.0, 1.0])
      >>> print(jnp.round(steihaug_cg(lambda v: H @ v, g, 10.0, rtol=1e-6).step, 4))
      [-1. -1.]
      >>> res = steihaug_cg(lambda v: H @ v, g, 0.5, rtol=1e-6)
      >>> print(jnp.round(jnp.linalg.norm(res.step), 6), bool(res.hits_boundary))
      0.5 True

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Alg. 7.2 and §7.1.
      Steihaug (1983), The conjugate gradient method and trust regions in large scale
      optimization, SIAM J. Numer. Anal. 20(3).
    """
    fn = "steihaug_cg"
    check_real_tree(fn, "g", g)
    check_nonnegative(fn, "rtol", rtol)
    check_nonnegative(fn, "atol", atol)
    check_count(fn, "max_steps", max_steps)
    H = wrap_operator(fn, "matvec", matvec, g, "g")
    dtype = real_dtype(g)
    radius = _prepare_radius(fn, radius, dtype)
    if max_steps is None:
        max_steps = 10 * tree_size(g)
    g_norm = tree_norm(g).astype(dtype)
    if rtol is None:
        rtol = jnp.minimum(0.5, jnp.sqrt(g_norm))
    tol = jnp.maximum(jnp.asarray(rtol, dtype) * g_norm, jnp.asarray(atol, dtype))

    def cond(state):
        *_, k, status = state
        return (status == _RUNNING) & (k < max_steps)

    def body(state):
        z, r, d, rr, model, r_norm, k, _ = state
        Hd = H(d)
        dHd = tree_vdot(d, Hd).astype(dtype)
        negative = dHd <= 0
        interior = _steihaug_interior_step(z, r, d, Hd, rr, dHd, negative, model, dtype)
        z_next, r_next, rr_next, model_next = interior
        crosses = ~negative & (tree_norm(z_next) >= radius)
        z_bound, r_bound, model_bound = _steihaug_boundary_step(
            z, r, d, Hd, dHd, negative, model, radius, dtype
        )
        exits = negative | crosses
        beta = rr_next / jnp.where(rr == 0, 1.0, rr)
        d_next = tree_axpy(beta, d, tree_scale(-1.0, r_next))
        r_new = tree_where(exits, r_bound, r_next)
        r_norm_new = jnp.where(exits, tree_norm(r_bound).astype(dtype), jnp.sqrt(rr_next))
        nonfinite = ~(
            jnp.isfinite(dHd)
            & jnp.isfinite(rr_next)
            & jnp.isfinite(model_next)
            & jnp.isfinite(model_bound)
            & jnp.isfinite(r_norm_new)
        )
        status = _steihaug_status(negative, crosses, rr_next, tol, nonfinite)
        new = (
            tree_where(exits, z_bound, z_next),
            r_new,
            d_next,
            rr_next,
            jnp.where(exits, model_bound, model_next),
            r_norm_new,
        )
        old = (z, r, d, rr, model, r_norm)
        kept = jax.tree.map(lambda a, b: jnp.where(nonfinite, a, b), old, new)
        return (*kept, k + 1, status)

    state = _steihaug_initial_state(g, g_norm, radius, tol, dtype)
    z, _, _, _, model, r_norm, k, status = jax.lax.while_loop(cond, body, state)
    status = jnp.where(status == _RUNNING, status_code(SolverStatus.MAX_STEPS), status)
    hits = (status == int(SolverStatus.BOUNDARY)) | (status == int(SolverStatus.NEGATIVE_CURVATURE))
    return SteihaugResult(
        step=z,
        predicted_reduction=-model,
        hits_boundary=hits,
        status=status,
        num_steps=k,
        residual_norm=r_norm,
    )


def _steihaug_initial_state(g: PyTree, g_norm: Array, radius: Array, tol: Array, dtype: Any):
    r"""CG state ``(z, r, d, ‖r‖², m(z), ‖r‖, k, status)`` at ``z = 0``.

    ``r_0 = g``, ``d_0 = -g`` (N&W Alg. 7.2, first lines). A non-finite ``g`` or
    radius starts, and ends, with status ``NONFINITE`` and a zero residual; a ``g``
    already below tolerance ends at once with ``CONVERGED`` and ``p = 0``.
    """
    finite0 = jnp.isfinite(g_norm) & jnp.isfinite(radius)
    status0 = jnp.where(
        finite0,
        jnp.where(g_norm <= tol, status_code(SolverStatus.CONVERGED), jnp.int32(_RUNNING)),
        status_code(SolverStatus.NONFINITE),
    )
    zero = tree_zeros_like(g)
    r0 = tree_where(finite0, g, zero)
    d0 = tree_scale(-1.0, r0)
    rr0 = jnp.where(finite0, g_norm * g_norm, 0.0).astype(dtype)
    return (
        zero,
        r0,
        d0,
        rr0,
        jnp.zeros((), dtype),
        jnp.where(finite0, g_norm, 0.0).astype(dtype),
        jnp.zeros((), jnp.int32),
        status0,
    )


def _steihaug_interior_step(
    z, r, d, Hd, rr: Array, dHd: Array, negative: Array, model: Array, dtype: Any
):
    r"""One interior CG step: ``z + αd``, ``r + αHd`` with ``α = ‖r‖²/dᵀHd``.

    Returns ``(z⁺, r⁺, ‖r⁺‖², m(z⁺))``; the model drops by ``½ α ‖r‖²`` (exact for
    CG from zero, N&W §5.1). On non-positive curvature ``α`` is computed with
    ``dᵀHd`` replaced by 1; that step is then discarded by the caller.
    """
    alpha = rr / jnp.where(negative, 1.0, dHd)
    z_next = tree_axpy(alpha, d, z)
    r_next = tree_axpy(alpha, Hd, r)
    rr_next = tree_vdot(r_next, r_next).astype(dtype)
    model_next = model - 0.5 * alpha * rr
    return z_next, r_next, rr_next, model_next


def _steihaug_boundary_step(
    z, r, d, Hd, dHd: Array, negative: Array, model: Array, radius: Array, dtype: Any
):
    r"""Boundary point ``z + τd`` with ``‖z + τd‖ = Δ``: the boundary root and the
    negative-curvature exit.

    With ``m(z + τd) = m(z) + τ rᵀd + ½ τ² dᵀHd``, the step along a direction of
    non-positive curvature takes the root ``τ_±`` of lower model value (N&W
    Alg. 7.2, first exit; both roots are candidates since ``m`` is unbounded along
    ``±d``); otherwise the positive root ``τ_+`` (second exit, the iterate leaves
    the region). The roots come from :func:`_boundary_taus` (cancellation-free).

    Returns ``(z + τd, r + τHd, m(z + τd))``.
    """
    zz = tree_vdot(z, z).astype(dtype)
    zd = tree_vdot(z, d).astype(dtype)
    dd = tree_vdot(d, d).astype(dtype)
    rd = tree_vdot(r, d).astype(dtype)
    tau_plus, tau_minus = _boundary_taus(zz, zd, dd, radius)

    def dmodel(t):
        return t * rd + 0.5 * t * t * dHd

    tau_neg = jnp.where(dmodel(tau_minus) < dmodel(tau_plus), tau_minus, tau_plus)
    tau = jnp.where(negative, tau_neg, tau_plus)
    z_bound = tree_axpy(tau, d, z)
    r_bound = tree_axpy(tau, Hd, r)
    model_bound = model + dmodel(tau)
    return z_bound, r_bound, model_bound


def _steihaug_status(
    negative: Array, crosses: Array, rr_next: Array, tol: Array, nonfinite: Array
) -> Array:
    """Status after one CG step, in order of precedence: ``NONFINITE``,
    ``NEGATIVE_CURVATURE`` (``dᵀHd <= 0``), ``BOUNDARY`` (``‖z⁺‖ >= Δ``),
    ``CONVERGED`` (``‖r⁺‖ <= tol``), else still running."""
    status = jnp.where(
        negative,
        status_code(SolverStatus.NEGATIVE_CURVATURE),
        jnp.where(
            crosses,
            status_code(SolverStatus.BOUNDARY),
            jnp.where(
                jnp.sqrt(rr_next) <= tol,
                status_code(SolverStatus.CONVERGED),
                jnp.int32(_RUNNING),
            ),
        ),
    )
    return jnp.where(nonfinite, status_code(SolverStatus.NONFINITE), status)


# --------------------------------------------------------------------------- Cauchy / dogleg


class TrustRegionStepResult(NamedTuple):
    """Result of :func:`cauchy_point` and :func:`dogleg`.

    Attributes:
      step: the descent step ``p`` (pytree like ``g``), ``‖p‖ <= radius``.
      predicted_reduction: ``-(gᵀp + ½ pᵀHp)``, ``>= 0``.
      hits_boundary: bool, ``‖p‖ = radius``.
      status: int32 :class:`SolverStatus`: ``CONVERGED`` (interior: the full Newton
        step for dogleg, the 1-D minimizer along ``-g`` for the Cauchy point),
        ``BOUNDARY``, ``NEGATIVE_CURVATURE`` (non-positive curvature was detected
        and the Cauchy point was used), or ``NONFINITE`` (zero step).
      num_steps: int32, CG iterations spent on the Newton step (0 for the Cauchy
        point or a supplied ``newton_step``).
    """

    step: PyTree
    predicted_reduction: Array
    hits_boundary: Array
    status: Array
    num_steps: Array


def _cauchy_coefficient(g_norm: Array, gHg: Array, radius: Array) -> tuple[Array, Array]:
    """``t`` with Cauchy point ``-t g``, and whether it lies on the boundary.

    ``t = Δ/‖g‖`` if ``gᵀHg <= 0``, else ``min(‖g‖²/gᵀHg, Δ/‖g‖)`` — N&W eq. 4.12
    written without the cube ``‖g‖³`` (which overflows early in float32).
    """
    t_bound = radius / _safe(g_norm)
    t_min = g_norm * g_norm / jnp.where(gHg > 0, gHg, 1.0)
    on_boundary = (gHg <= 0) | (t_min >= t_bound)
    t = jnp.where(on_boundary, t_bound, t_min)
    return jnp.where(g_norm > 0, t, 0.0), on_boundary


def cauchy_point(
    matvec: Callable[[PyTree], PyTree], g: PyTree, radius: float | Array
) -> TrustRegionStepResult:
    r"""The Cauchy point: the model minimizer along ``-g`` inside the region.

    ``p_C = -τ (Δ/‖g‖) g`` with ``τ = 1`` if ``gᵀHg <= 0`` and
    ``τ = min(‖g‖³/(Δ gᵀHg), 1)`` otherwise (Nocedal & Wright 2006, Alg. 4.2,
    eq. 4.12). One operator product.

    Args:
      matvec: symmetric operator ``v -> H v`` on pytrees shaped like ``g``.
      g: the gradient (pytree of real floats).
      radius: ``Δ > 0``. May be traced.

    Returns:
      A :class:`TrustRegionStepResult`; ``status`` is ``CONVERGED`` when ``τ < 1``
      (or ``g = 0``), ``BOUNDARY`` when ``τ = 1`` with positive curvature, and
      ``NEGATIVE_CURVATURE`` when ``gᵀHg <= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import cauchy_point
      >>> res = cauchy_point(lambda v: 2.0 * v, jnp.array([3.0, 4.0]), 10.0)
      >>> print(res.step, float(res.predicted_reduction))
      [-1.5 -2. ] 6.25

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §4.1, Alg. 4.2.
    """
    fn = "cauchy_point"
    check_real_tree(fn, "g", g)
    H = wrap_operator(fn, "matvec", matvec, g, "g")
    dtype = real_dtype(g)
    radius = _prepare_radius(fn, radius, dtype)
    g_norm = tree_norm(g).astype(dtype)
    gHg = tree_vdot(g, H(g)).astype(dtype)
    t, on_boundary = _cauchy_coefficient(g_norm, gHg, radius)
    step = tree_scale(-t, g)
    pred = t * g_norm * g_norm - 0.5 * t * t * gHg
    status = jnp.where(
        g_norm == 0,
        status_code(SolverStatus.CONVERGED),
        jnp.where(
            gHg <= 0,
            status_code(SolverStatus.NEGATIVE_CURVATURE),
            jnp.where(
                on_boundary, status_code(SolverStatus.BOUNDARY), status_code(SolverStatus.CONVERGED)
            ),
        ),
    )
    finite = jnp.isfinite(pred) & jnp.isfinite(t) & jnp.isfinite(radius)
    status = jnp.where(finite, status, status_code(SolverStatus.NONFINITE))
    return TrustRegionStepResult(
        step=tree_where(finite, step, tree_zeros_like(g)),
        predicted_reduction=jnp.where(finite, pred, 0.0),
        hits_boundary=finite & (g_norm > 0) & on_boundary,
        status=status,
        num_steps=jnp.zeros((), jnp.int32),
    )


def dogleg(
    matvec: Callable[[PyTree], PyTree],
    g: PyTree,
    radius: float | Array,
    *,
    newton_step: PyTree | None = None,
    rtol: float | Array | None = None,
    max_steps: int | Array | None = None,
) -> TrustRegionStepResult:
    r"""Powell's dogleg step for a positive definite model.

    With the unconstrained minimizer along ``-g``, ``p_U = -(gᵀg / gᵀHg) g``, and
    the Newton step ``p_B = -H^{-1} g`` (Nocedal & Wright 2006, §4.1, eq. 4.16):

    * ``‖p_B‖ <= Δ``: ``p = p_B`` (``CONVERGED``, interior);
    * ``‖p_U‖ >= Δ``: ``p = -Δ g/‖g‖`` (``BOUNDARY``);
    * otherwise ``p = p_U + τ (p_B - p_U)`` with ``τ ∈ [0, 1]`` the positive root of
      ``‖p_U + τ(p_B - p_U)‖ = Δ`` (``BOUNDARY``).

    Dogleg needs ``H`` positive definite. If ``gᵀHg <= 0``, if CG met negative
    curvature or a non-finite value while computing ``p_B``, or if ``p_B`` is not a
    descent direction (``gᵀp_B >= 0``), the Cauchy point (N&W Alg. 4.2) is returned
    instead, with status ``NEGATIVE_CURVATURE`` (its step lies on the boundary when
    ``gᵀHg <= 0``).

    Args:
      matvec: symmetric operator ``v -> H v`` on pytrees shaped like ``g``.
      g: the gradient (pytree of real floats).
      radius: ``Δ > 0``. May be traced.
      newton_step: ``p_B = -H^{-1} g`` if already known (e.g. from a Cholesky solve,
        see :func:`damped_cholesky_solve`); otherwise it is computed by :func:`cg`.
      rtol: relative tolerance of that CG solve (``None``: :func:`cg`'s default).
      max_steps: iteration limit of that CG solve (``None``: :func:`cg`'s default).

    Returns:
      A :class:`TrustRegionStepResult`. ``predicted_reduction`` is evaluated with one
      extra operator product on the final step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import dogleg
      >>> H = jnp.array([[2.0, 0.0], [0.0, 1.0]])
      >>> print(jnp.round(dogleg(lambda v: H @ v, jnp.array([2.0, 1.0]), 10.0).step, 4))
      [-1. -1.]

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §4.1 (the dogleg
      method, eqs. 4.15–4.16). Powell (1970), A hybrid method for nonlinear equations.
    """
    fn = "dogleg"
    check_real_tree(fn, "g", g)
    check_nonnegative(fn, "rtol", rtol)
    check_count(fn, "max_steps", max_steps)
    H = wrap_operator(fn, "matvec", matvec, g, "g")
    dtype = real_dtype(g)
    radius = _prepare_radius(fn, radius, dtype)

    g_norm = tree_norm(g).astype(dtype)
    gHg = tree_vdot(g, H(g)).astype(dtype)
    p_b, newton_ok, cg_steps = _dogleg_newton_step(fn, H, g, newton_step, rtol, max_steps)
    g_pb = tree_vdot(g, p_b).astype(dtype)
    usable = newton_ok & (gHg > 0) & (g_pb < 0) & jnp.isfinite(g_pb)
    a, c, newton_inside, c_boundary = _dogleg_coefficients(
        g_norm, gHg, g_pb, tree_norm(p_b).astype(dtype), radius, usable
    )
    step = jax.tree.map(
        lambda gi, pi: (a * gi + c * pi).astype(gi.dtype), g, tree_where(usable, p_b, g)
    )
    pred = -(tree_vdot(g, step) + 0.5 * tree_vdot(step, H(step))).astype(dtype)
    hits = (g_norm > 0) & jnp.where(usable, ~newton_inside, c_boundary)
    status = _dogleg_status(g_norm, usable, newton_inside)
    finite = jnp.isfinite(pred) & tree_all_finite(step)
    return TrustRegionStepResult(
        step=tree_where(finite, step, tree_zeros_like(g)),
        predicted_reduction=jnp.where(finite, pred, 0.0),
        hits_boundary=finite & hits,
        status=jnp.where(finite, status, status_code(SolverStatus.NONFINITE)),
        num_steps=cg_steps,
    )


def _dogleg_newton_step(fn, H, g, newton_step, rtol, max_steps):
    """``p_B = −H⁻¹g``: the supplied one, or CG's; whether it may be used; CG steps.

    CG's ``p_B`` is usable when CG converged or ran out of steps (not on negative
    curvature or a non-finite value); a supplied one when it is finite.
    """
    if newton_step is None:
        sol = cg(H, tree_scale(-1.0, g), rtol=rtol, max_steps=max_steps)
        newton_ok = (sol.status == int(SolverStatus.CONVERGED)) | (
            sol.status == int(SolverStatus.MAX_STEPS)
        )
        return sol.x, newton_ok, sol.num_steps
    check_real_tree(fn, "newton_step", newton_step)
    check_same_structure(fn, "g", g, "newton_step", newton_step)
    p_b = cast_like(newton_step, g)
    return p_b, tree_all_finite(p_b), jnp.zeros((), jnp.int32)


def _dogleg_path(g_norm, gHg, g_pb, pb_norm, radius):
    """The dogleg step as ``a g + c p_B`` (N&W eqs. 4.15–4.16), and whether ``p_B`` fits.

    ``p_U = −t_u g`` with ``t_u = ‖g‖²/gᵀHg``; the boundary root ``τ`` of
    ``‖p_U + τ w‖ = Δ``, ``w = p_B − p_U = p_B + t_u g``, is written in inner
    products of ``g`` and ``p_B``.
    """
    t_u = g_norm * g_norm / jnp.where(gHg > 0, gHg, 1.0)
    pu_norm = t_u * g_norm
    newton_inside = pb_norm <= radius
    steepest_outside = pu_norm >= radius
    uu = pu_norm * pu_norm
    uw = -t_u * (g_pb + t_u * g_norm * g_norm)
    ww = pb_norm * pb_norm + 2.0 * t_u * g_pb + t_u * t_u * g_norm * g_norm
    tau, _ = _boundary_taus(uu, uw, ww, radius)
    tau = jnp.clip(tau, 0.0, 1.0)
    a = jnp.where(
        newton_inside, 0.0, jnp.where(steepest_outside, -radius / _safe(g_norm), -(1.0 - tau) * t_u)
    )
    c = jnp.where(newton_inside, 1.0, jnp.where(steepest_outside, 0.0, tau))
    return a, c, newton_inside


def _dogleg_coefficients(g_norm, gHg, g_pb, pb_norm, radius, usable):
    """``(a, c)`` of the step ``a g + c p_B``, whether ``p_B`` fits, and the Cauchy boundary.

    The dogleg path where ``p_B`` is usable, else the Cauchy point ``−t_c g`` (N&W
    Alg. 4.2, whose boundary flag is returned last); zero for ``g = 0``.
    """
    t_c, c_boundary = _cauchy_coefficient(g_norm, gHg, radius)
    a_dogleg, c_dogleg, newton_inside = _dogleg_path(g_norm, gHg, g_pb, pb_norm, radius)
    a = jnp.where(usable, a_dogleg, -t_c)
    c = jnp.where(usable, c_dogleg, 0.0)
    a = jnp.where(g_norm > 0, a, 0.0)
    c = jnp.where(g_norm > 0, c, 0.0)
    return a, c, newton_inside, c_boundary


def _dogleg_status(g_norm, usable, newton_inside):
    """``CONVERGED`` (``g = 0`` or ``p_B`` inside), ``BOUNDARY``, or ``NEGATIVE_CURVATURE``."""
    status_usable = jnp.where(
        newton_inside, status_code(SolverStatus.CONVERGED), status_code(SolverStatus.BOUNDARY)
    )
    return jnp.where(
        g_norm == 0,
        status_code(SolverStatus.CONVERGED),
        jnp.where(usable, status_usable, status_code(SolverStatus.NEGATIVE_CURVATURE)),
    )


# --------------------------------------------------------------------------- exact


class TrustRegionExactResult(NamedTuple):
    """Result of :func:`trust_region_exact`.

    Attributes:
      step: ``(n,)`` the solution ``p`` (descent step), ``‖p‖ <= radius``.
      predicted_reduction: ``-(gᵀp + ½ pᵀHp) >= 0``.
      hits_boundary: bool, ``‖p‖ = radius``.
      status: int32 :class:`SolverStatus`: ``CONVERGED`` (interior, ``multiplier =
        0``), ``BOUNDARY`` (``‖p‖ = radius`` within ``rtol``, including the hard
        case), ``MAX_STEPS`` (the secular iteration ran out; the step is scaled into
        the region), or ``NONFINITE`` (non-finite input; zero step).
      num_steps: int32, Newton iterations on the secular equation (0 when the
        interior or hard-case solution is taken directly).
      multiplier: the Lagrange multiplier ``λ >= 0`` with ``(H + λI) p = -g``.
      hard_case: bool, the hard case was detected: ``g`` has (numerically) no
        component along the eigenvector(s) of the smallest eigenvalue, and the
        boundary was reached by adding that eigenvector.
    """

    step: Array
    predicted_reduction: Array
    hits_boundary: Array
    status: Array
    num_steps: Array
    multiplier: Array
    hard_case: Array


def trust_region_exact(
    H: Array,
    g: Array,
    radius: float | Array,
    *,
    rtol: float | Array | None = None,
    max_steps: int | Array = 50,
) -> TrustRegionExactResult:
    r"""Nearly exact trust-region step on a dense matrix (Moré–Sorensen).

    Finds ``p`` and ``λ >= 0`` with (Nocedal & Wright 2006, Thm. 4.1)

    .. math::

       (H + λI) p = -g,\qquad λ (Δ - ‖p‖) = 0,\qquad H + λI \succeq 0,

    through the eigendecomposition ``H = Q diag(w) Qᵀ`` (``jnp.linalg.eigh`` of
    ``½(H + Hᵀ)``, ``w`` ascending, ``ĝ = Qᵀ g``), so that
    ``‖p(λ)‖² = Σ_i ĝ_i² / (w_i + λ)²``:

    1. *Interior*: if ``w_1 > 0`` and ``‖H^{-1} g‖ <= Δ``, ``λ = 0``.
    2. *Hard case* (N&W §4.3): if ``w_1 < 0``, the components of ``ĝ`` on the
       eigenspace of ``w_1`` vanish (to rounding) and the rest of the step at
       ``λ = -w_1`` is shorter than ``Δ``, then ``λ = -w_1`` and
       ``p = p(λ) + τ q_1`` with ``τ = sqrt(Δ² - ‖p(λ)‖²)`` (the sign of ``τ`` follows
       ``-ĝ_1``, continuous with the nearby easy case). If ``w_1`` is zero to rounding
       (``|w_1| <= max(n, 10) eps max|w|``, a singular positive semidefinite ``H``
       with ``g`` in its range), the interior minimum-norm step ``-H^+ g`` is taken.
    3. Otherwise, the secular equation ``1/‖p(λ)‖ - 1/Δ = 0`` is solved by Newton's
       method in ``λ`` (N&W Alg. 4.3, eq. 4.44:
       ``λ ← λ + (‖p‖/‖q‖)² (‖p‖ - Δ)/Δ`` with ``‖q‖² = Σ ĝ_i²/(w_i+λ)³``), safeguarded
       by a bracket and the Moré–Sorensen fallback ``max(sqrt(λ_L λ_U),
       λ_L + 10⁻³(λ_U - λ_L))``. It starts left of the root, where the iteration is
       monotone and converges quadratically; stops when ``|‖p‖ - Δ| <= rtol Δ``.

    The iteration works in ``θ = λ + w_1`` with the gaps ``w_i - w_1 >= 0``, which
    keeps the pole at ``θ = 0`` free of cancellation, and in units where
    ``max|ĝ| = max|w| = 1`` with norms of ratios ``|p̂_i|/Δ``, so that no square
    over- or underflows (float32 gradients of 1e-20 are fine). Each iteration costs
    ``O(n)`` after the ``O(n³)`` eigendecomposition.

    Args:
      H: ``(n, n)`` symmetric real matrix (symmetrized internally).
      g: ``(n,)`` gradient.
      radius: ``Δ > 0``. May be traced (vmap over radii works).
      rtol: relative tolerance on ``‖p‖ = Δ``; ``None`` means ``eps^0.75`` of the
        dtype (1.8e-12 in float64, 6.4e-6 in float32).
      max_steps: maximum secular Newton iterations (default 50). May be traced.

    Returns:
      A :class:`TrustRegionExactResult` ``(step, predicted_reduction, hits_boundary,
      status, num_steps, multiplier, hard_case)``.

    Raises:
      ValueError, TypeError: for a non-square ``H``, a ``g`` of another length, non-
        float dtypes, ``radius <= 0`` or ``max_steps < 1`` (when Python numbers).

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import trust_region_exact
      >>> H = jnp.diag(jnp.array([1.0, 2.0]))
      >>> res = trust_region_exact(H, jnp.array([1.0, 2.0]), 10.0)
      >>> print(jnp.round(res.step, 4), int(res.status))
      [-1. -1.] 0
      >>> res = trust_region_exact(jnp.diag(jnp.array([-1.0, 2.0])), jnp.array([0.0, 2.0]), 2.0)
      >>> print(jnp.round(res.step, 4), float(res.multiplier), bool(res.hard_case))
      [ 1.8856 -0.6667] 1.0 True

    References:
      Moré & Sorensen (1983), Computing a trust region step, SIAM J. Sci. Stat.
      Comput. 4(3). Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §4.3,
      Alg. 4.3, Thm. 4.1.
    """
    fn = "trust_region_exact"
    H, g = check_matrix_and_rhs(fn, H, g, "g", allow_matrix_rhs=False)
    check_nonnegative(fn, "rtol", rtol)
    check_count(fn, "max_steps", max_steps)
    dtype = H.dtype
    radius = _prepare_radius(fn, radius, dtype)
    n = H.shape[0]
    eps = float(np.finfo(dtype).eps)
    rtol = jnp.asarray(eps**0.75 if rtol is None else rtol, dtype)

    finite = jnp.all(jnp.isfinite(H)) & jnp.all(jnp.isfinite(g)) & jnp.isfinite(radius)
    finite = finite & (radius > 0)
    H = jnp.where(finite, symmetrize(H), jnp.zeros_like(H))
    g = jnp.where(finite, g, jnp.zeros_like(g))
    radius = jnp.where(finite, radius, 1.0)

    w, Q = jnp.linalg.eigh(H)
    gh = jnp.matmul(Q.T, g, precision=HIGHEST)
    sigma_g, sigma_h, gs, ws, radius_s = _exact_scaled_problem(gh, w, radius)
    w1 = ws[0]
    gap = jnp.maximum(ws - w1, 0.0)  # d_i = w_i - w_1 >= 0
    tol_w = max(n, 10) * eps  # eigenvalues within tol_w of w_1 form its cluster
    cluster = gap <= tol_w
    theta_lo = jnp.maximum(w1, 0.0)  # λ = max(-w_1, 0)
    hard, s, rem = _exact_hard_case_test(gs, gap, w1, cluster, theta_lo, radius_s, tol_w)
    # A smallest eigenvalue within rounding of zero counts as zero: the hard case
    # then gives the interior minimum-norm step -H⁺g instead of a boundary step
    # along a numerically null direction.
    hard_boundary = hard & (w1 < -tol_w)
    q_interior = _exact_ratios(gs, gap, radius_s, jnp.maximum(w1, tol_w))[0]
    interior = ~hard & (w1 > 0) & (_safe_norm(q_interior) <= 1.0)
    secular = ~hard & ~interior

    theta, num_steps, done = _exact_secular_newton(
        gs, gap, w1, s, theta_lo, radius_s, tol_w, secular, rtol, max_steps, eps
    )
    theta = jnp.where(secular, theta, theta_lo)
    p_hat = _exact_assemble_step(
        gs, gh, gap, theta, hard & cluster, hard_boundary, rem, radius, sigma_g, sigma_h
    )
    step = jnp.matmul(Q, p_hat, precision=HIGHEST)
    pred = -(jnp.dot(gh, p_hat, precision=HIGHEST) + 0.5 * jnp.sum(w * p_hat * p_hat))
    multiplier = jnp.maximum(theta - w1, 0.0) * sigma_h
    multiplier = jnp.where(interior | (hard & ~hard_boundary), 0.0, multiplier)

    boundary = hard_boundary | secular
    status = jnp.where(
        interior | (hard & ~hard_boundary),
        status_code(SolverStatus.CONVERGED),
        jnp.where(
            secular & ~done, status_code(SolverStatus.MAX_STEPS), status_code(SolverStatus.BOUNDARY)
        ),
    )
    ok = finite & jnp.all(jnp.isfinite(step)) & jnp.isfinite(pred)
    zero = jnp.zeros((), dtype)
    return TrustRegionExactResult(
        step=jnp.where(ok, step, jnp.zeros_like(step)),
        predicted_reduction=jnp.where(ok, pred, zero),
        hits_boundary=ok & boundary,
        status=jnp.where(ok, status, status_code(SolverStatus.NONFINITE)),
        num_steps=num_steps,
        multiplier=jnp.where(ok, multiplier, zero),
        hard_case=ok & hard_boundary,
    )


def _exact_scaled_problem(gh: Array, w: Array, radius: Array):
    r"""The eigenbasis problem in units where ``max|ĝ| = max|w| = 1``.

    ``ĝ_s = ĝ/σ_g``, ``w_s = w/σ_H``, ``Δ_s = Δ σ_H/σ_g`` and ``p = (σ_g/σ_H) p_s``,
    so that no square over- or underflows. Returns ``(σ_g, σ_H, ĝ_s, w_s, Δ_s)``.
    """
    sigma_g = jnp.max(jnp.abs(gh))
    sigma_g = jnp.where(sigma_g > 0, sigma_g, 1.0)
    sigma_h = jnp.max(jnp.abs(w))
    sigma_h = jnp.where(sigma_h > 0, sigma_h, 1.0)
    gs = gh / sigma_g
    ws = w / sigma_h
    radius_s = radius * (sigma_h / sigma_g)
    return sigma_g, sigma_h, gs, ws, radius_s


def _exact_ratios(gs: Array, gap: Array, radius_s: Array, theta: Array) -> tuple[Array, Array]:
    r"""``q_i = ĝ_i / (Δ (d_i + θ))`` and ``t_i = d_i + θ``, so ``‖q‖ = ‖p(λ)‖/Δ``.

    ``θ = λ + w_1`` and ``d_i = w_i - w_1 >= 0``: the pole at ``λ = -w_1`` sits at
    ``θ = 0`` without cancellation.
    """
    t = gap + theta
    return gs / (radius_s * t), t


def _exact_hard_case_test(gs, gap, w1, cluster, theta_lo, radius_s, tol_w):
    r"""Hard-case test at ``λ = max(-w_1, 0)`` (Moré & Sorensen 1983 §3; N&W §4.3).

    The hard case holds when ``w_1 <= 0`` (to rounding), the components of ``ĝ`` on
    the cluster of ``w_1`` vanish, ``‖ĝ_cluster‖ <= tol_w Δ sqrt(1 - ‖p_excl‖²/Δ²)``,
    and the step ``p_excl`` from the other components is no longer than ``Δ``
    (Conn, Gould & Toint 2000, Alg. 7.3.4/7.3.6).

    Returns ``(hard, ‖ĝ_cluster‖, (Δ² - ‖p_excl‖²)/Δ²)``.
    """
    s = _safe_norm(jnp.where(cluster, gs, 0.0))
    q_excl = jnp.where(cluster, 0.0, gs / (radius_s * _safe(gap + theta_lo)))
    excl = _safe_norm(q_excl)
    rem = (1.0 - excl) * (1.0 + excl)
    hard = (w1 <= tol_w) & (excl <= 1.0) & (s <= tol_w * radius_s * jnp.sqrt(jnp.maximum(rem, 0.0)))
    return hard, s, rem


def _exact_safeguarded_update(theta, lo, hi, q_norm, step_ratio, eps):
    r"""Moré–Sorensen safeguards for one Newton step on the secular equation.

    Updates the bracket ``[θ_L, θ_U]`` (``‖p‖ > Δ`` means the root lies right of
    ``θ``), takes the Newton step ``θ + (‖p‖²/‖q‖²)(‖p‖ - Δ)/Δ`` (N&W eq. 4.44) when it
    falls strictly inside, and otherwise ``max(sqrt(θ_L θ_U), θ_L + 10⁻³(θ_U - θ_L))``
    (Moré & Sorensen 1983 §3). Returns ``(θ⁺, θ_L, θ_U, stalled)``; ``stalled`` when
    the iterate no longer moves, is non-finite or the bracket is at rounding level.
    """
    too_long = q_norm > 1.0
    lo = jnp.where(too_long, theta, lo)
    hi = jnp.where(too_long, hi, theta)
    theta_newton = theta + step_ratio * (q_norm - 1.0)
    inside = (theta_newton > lo) & (theta_newton < hi)
    theta_safe = jnp.maximum(jnp.sqrt(lo * hi), lo + 1e-3 * (hi - lo))
    theta_next = jnp.where(inside, theta_newton, theta_safe)
    stalled = (theta_next == theta) | ~jnp.isfinite(theta_next) | (hi - lo <= eps * hi)
    return theta_next, lo, hi, stalled


def _exact_secular_newton(gs, gap, w1, s, theta_lo, radius_s, tol_w, secular, rtol, max_steps, eps):
    r"""Safeguarded Newton on ``1/‖p(θ)‖ - 1/Δ = 0`` over ``θ ∈ (θ_L, θ_U]``.

    ``θ_U = ‖ĝ_s‖/Δ_s`` since ``‖p(θ)‖ <= ‖ĝ‖/θ``. The start lies left of the root
    (``max(w_1, tol)`` for positive definite ``H``, else ``‖ĝ_cluster‖/Δ - tol``
    clipped into the bracket), where the iteration is monotone (N&W Alg. 4.3).
    Stops when ``|‖p‖ - Δ| <= rtol Δ``; runs only where ``secular``.

    Returns ``(θ, num_steps, done)``.
    """
    theta_hi = jnp.maximum(_safe_norm(gs) / radius_s, theta_lo)
    theta_start = jnp.where(
        w1 > 0, jnp.maximum(w1, tol_w), jnp.clip(s / radius_s - tol_w, tol_w, theta_hi)
    )
    theta_start = jnp.minimum(theta_start, jnp.maximum(theta_hi, tol_w))

    def cond(state):
        _, _, _, k, done = state
        return secular & ~done & (k < max_steps)

    def body(state):
        theta, lo, hi, k, _ = state
        q, t = _exact_ratios(gs, gap, radius_s, theta)
        m = jnp.max(jnp.abs(q))
        qn = q / jnp.where(m > 0, m, 1.0)
        q_norm = m * jnp.sqrt(jnp.sum(qn * qn))
        converged = jnp.abs(q_norm - 1.0) <= rtol
        # ‖p‖²/‖q‖² of N&W eq. 4.44, here Σq²/Σ(q²/t).
        step_ratio = jnp.sum(qn * qn) / _safe(jnp.sum(qn * qn / t))
        theta_next, lo, hi, stalled = _exact_safeguarded_update(
            theta, lo, hi, q_norm, step_ratio, eps
        )
        theta_next = jnp.where(converged | ~jnp.isfinite(theta_next), theta, theta_next)
        k_next = k + jnp.where(converged, 0, 1).astype(jnp.int32)
        return theta_next, lo, hi, k_next, converged | stalled

    state = (theta_start, theta_lo, theta_hi, jnp.zeros((), jnp.int32), jnp.array(False))
    theta, _, _, num_steps, done = jax.lax.while_loop(cond, body, state)
    return theta, num_steps, done


def _exact_assemble_step(gs, gh, gap, theta, drop, hard_boundary, rem, radius, sigma_g, sigma_h):
    r"""``p̂ = Qᵀp`` in the original units, including the hard-case step.

    ``p̂_i = -ĝ_i/(w_i + λ)``; in the hard case the cluster components are replaced
    by ``τ q_1`` with ``τ = sqrt(Δ² - ‖p_excl‖²)``, its sign following ``-ĝ_1``
    (Moré & Sorensen 1983 §3; Conn, Gould & Toint 2000 Alg. 7.3.6). An unconverged
    secular iterate is scaled into the region, ``‖p̂‖ <= Δ``.
    """
    denom = gap + theta
    p_hat = jnp.where(drop, 0.0, gs / jnp.where(drop | (denom <= 0), 1.0, denom))
    p_hat = -(sigma_g / sigma_h) * p_hat
    tau = jnp.where(hard_boundary, radius * jnp.sqrt(jnp.maximum(rem, 0.0)), 0.0)
    sign = jnp.where(gh[0] > 0, -1.0, 1.0)
    p_hat = p_hat.at[0].add(sign * tau)
    p_norm = _safe_norm(p_hat)
    return p_hat * jnp.minimum(1.0, radius / _safe(p_norm))
