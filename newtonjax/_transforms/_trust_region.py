"""Trust-region Newton as an optax transform: ``scale_by_trust_region`` / ``trust_region``.

Descent × search, in optimistix's terms: the descent minimizes the quadratic model
``m(p) = f + g·p + ½ pᵀHp`` within ``‖D p‖ ≤ Δ`` (the subproblem), the search is a
trust-region radius update on the gain ratio. Without scaling (``D = I``) it is the
classical rule of Nocedal & Wright (2006), Alg. 4.1:

    ρ = (f(θ) − f(θ + p)) / (m(0) − m(p))
    ρ < ¼            →  Δ ← ¼ Δ
    ρ > ¾, ‖p‖ = Δ    →  Δ ← min(2Δ, Δ_max)
    accept p          iff ρ > η

With the diagonal scaling of the exact subproblem (the default there) the scaling,
the start and the radius rule are MINPACK's (Moré 1978): ``D`` from the Hessian's
diagonal, updated monotonically (:func:`update_scale`), and
:func:`update_radius_minpack` (shrink by quadratic interpolation, ``Δ ← 2‖D p‖``
after a good or an interior step).

Subproblems: ``"exact"`` (Moré–Sorensen on the dense Hessian, hard case included),
``"steihaug_cg"`` (truncated CG, matrix-free), ``"dogleg"`` and ``"cauchy"``.
A non-finite trial value counts as ``ρ = −∞``: the step is rejected, the radius
shrinks and ``info.rejected`` says so.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax import linalg
from newtonjax._checks import check_choice, check_count, check_in_range, check_positive
from newtonjax._curvature import hessian_operator
from newtonjax._transforms._common import acceptance, bind_value_fn
from newtonjax._tree import (
    PyTree,
    tree_dtype,
    tree_norm,
    tree_ravel,
    tree_scale,
    tree_size,
    tree_sub,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)

__all__ = ["TrustRegionInfo", "ScaleByTrustRegionState", "scale_by_trust_region", "trust_region"]

SUBPROBLEMS = ("exact", "steihaug_cg", "dogleg", "cauchy")
SCALINGS = ("diagonal", "none")


class TrustRegionInfo(NamedTuple):
    """Diagnostics of the last trust-region step (all scalars).

    Attributes:
      rho: gain ratio actual / predicted reduction (``-inf`` for a non-finite trial).
      predicted_reduction: ``m(0) − m(p)``.
      actual_reduction: ``f(θ) − f(θ + p)``.
      step_norm: ``‖D p‖`` (``‖p‖`` without scaling), the length the radius bounds.
      rejected: whether the step was rejected (the update is zero).
      cg_steps: CG iterations of the subproblem solver (0 where none ran).
      subproblem_status: :class:`newtonjax.linalg.SolverStatus` code (why CG
        stopped: converged, boundary, negative curvature, max steps).
    """

    rho: jax.Array
    predicted_reduction: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    rejected: jax.Array
    cg_steps: jax.Array
    subproblem_status: jax.Array


class ScaleByTrustRegionState(NamedTuple):
    """State of :func:`scale_by_trust_region`.

    Attributes:
      radius: the trust-region radius Δ for the next step (``inf`` before the first
        step of the exact subproblem's automatic start).
      value: ``f`` at the point the last update moves to, ``params − u`` (the trial
        point if the step was accepted, else ``params``); ``inf`` before the first
        update. With ``grad`` it follows optax's convention
        (``optax.value_and_grad_from_state``).
      grad: ``∇f`` at that point (zeros before the first update).
      info: diagnostics of the last step.
      scale: the diagonal scaling ``D`` of the region ``‖D p‖ ≤ Δ``, flat, in
        :func:`jax.flatten_util.ravel_pytree` order (zeros before the first update);
        shape ``(0,)`` without scaling.
    """

    radius: jax.Array
    value: jax.Array
    grad: PyTree
    info: TrustRegionInfo
    scale: jax.Array


def _initial_info(dtype) -> TrustRegionInfo:
    zero = jnp.zeros((), dtype)
    return TrustRegionInfo(
        rho=zero,
        predicted_reduction=zero,
        actual_reduction=zero,
        step_norm=zero,
        rejected=jnp.zeros((), bool),
        cg_steps=jnp.zeros((), jnp.int32),
        subproblem_status=jnp.zeros((), jnp.int32),
    )


def update_radius(radius, rho, step_norm, max_radius):
    """Nocedal & Wright (2006) Alg. 4.1 radius rule (``-inf``/NaN ρ shrinks)."""
    on_boundary = step_norm >= 0.99 * radius
    shrink = ~(rho >= 0.25)
    grow = (rho > 0.75) & on_boundary
    # After a shrink the radius is also capped by the rejected step's length, so a
    # tiny interior step that failed does not leave a much larger radius behind.
    shrunk = 0.25 * jnp.minimum(radius, jnp.where(step_norm > 0, step_norm, radius))
    return jnp.where(shrink, shrunk, jnp.where(grow, jnp.minimum(2.0 * radius, max_radius), radius))


def update_radius_minpack(radius, rho, step_norm, actual, slope, max_radius):
    """MINPACK's radius rule (Moré 1978 §4–6; ``lmder``), for the scaled region.

    With ``‖D p‖`` the scaled step, ``actual = f − f(θ + p)`` and ``slope = gᵀp < 0``:

    * ``ρ <= ¼``: ``Δ ← t·min(Δ, 10‖D p‖)`` with ``t`` the minimizer of the quadratic
      through ``f``, the slope and ``f(θ + p)`` along the step,
      ``t = −slope / (2(−actual − slope))``, clamped to ``[0.1, ½]`` (``½`` when
      ``f`` did not increase, 0.1 for a non-finite trial; Dennis & Schnabel 1983,
      A6.4.5);
    * ``ρ >= ¾``, or an interior (Newton, ``λ = 0``) step: ``Δ ← 2‖D p‖`` (at most
      ``Δ_max``), which follows a shrinking step length down as well as up;
    * otherwise Δ is kept.
    """
    curvature = -actual - slope  # φ(1) − φ(0) − φ'(0) of φ(t) = f(θ + t p)
    t = -slope / jnp.where(curvature > 0, 2.0 * curvature, 1.0)
    t = jnp.where(jnp.isfinite(actual) & (curvature > 0), jnp.clip(t, 0.1, 0.5), 0.1)
    t = jnp.where(actual >= 0, 0.5, t)
    shrunk = t * jnp.minimum(radius, jnp.where(step_norm > 0, 10.0 * step_norm, radius))
    interior = step_norm < 0.99 * radius
    grown = jnp.minimum(2.0 * step_norm, max_radius)
    grow = (rho >= 0.75) | (interior & (step_norm > 0))
    return jnp.where(~(rho > 0.25), shrunk, jnp.where(grow, grown, radius))


def _solve_subproblem(subproblem, op, g, radius, cg_rtol, max_cg_steps, scale=None, x=None):
    """Descent step ``p`` (``m(p) < m(0)``), predicted reduction, CG steps, status, Δ used,
    and the scaling ``D`` after :func:`update_scale` (``None`` without scaling).

    With a diagonal ``scale`` ``D`` (flat, exact subproblem only) the region is the
    ellipsoid ``‖D p‖ ≤ Δ``: the subproblem is solved in ``q = D p`` with
    ``D⁻¹ H D⁻¹`` and ``D⁻¹ g`` (Conn, Gould & Toint 2000, §6.7, §7.3). An infinite
    ``radius`` (the exact subproblem's automatic start) takes the Newton step when
    ``H`` is positive definite, and reports its (scaled) length as the radius it was
    solved with; otherwise (or for ``g = 0``), with scaling, the step is solved with
    the length ``‖ĝ‖³ / ĝᵀĤĝ`` of the scaled model's Cauchy step (``ĝ = D⁻¹g``,
    ``Ĥ = D⁻¹HD⁻¹``; Dennis & Schnabel 1983, Alg. A6.4.1, the start when no radius
    is given) where ``ĝᵀĤĝ > 0``, else ``Δ = ‖D x‖`` at the flat parameters ``x``
    (MINPACK's ``Δ₀ = factor·‖D x₀‖`` with factor 1, Moré 1978 §6), else
    ``Δ = 1``; all three are scale-invariant, as the Newton step's length is.
    Without scaling the fallback is ``Δ = 1``.
    """
    if subproblem == "exact":
        g_flat, unravel = tree_ravel(g)
        hess = op.as_matrix()
        if scale is not None:
            scale = update_scale(scale, hess)
            hess = hess / (scale[:, None] * scale[None, :])
            g_flat = g_flat / scale
        # Most steps near a minimizer are interior Newton steps: try Cholesky first
        # and run the eigendecomposition of Moré–Sorensen only when H is not
        # positive definite or the Newton step leaves the region.
        chol = jnp.linalg.cholesky(hess)
        newton = -jax.scipy.linalg.cho_solve((chol, True), g_flat)
        newton_norm = jnp.linalg.norm(newton)
        interior = jnp.all(jnp.isfinite(newton)) & (newton_norm <= radius)
        # The automatic start: Δ₀ = ‖p_N‖ for a Newton step, else (H not positive
        # definite, or g = 0) the Cauchy step's length, or ‖D x₀‖, or 1.
        automatic = jnp.isinf(radius)
        fallback = 1.0
        if scale is not None:
            x_norm = jnp.linalg.norm(scale * x)
            fallback = jnp.where(x_norm > 0, x_norm, 1.0)
            # Dennis & Schnabel's start: the length ‖ĝ‖³ / ĝᵀĤĝ of the Cauchy step
            # of the scaled model (ĝ = D⁻¹g, Ĥ = D⁻¹HD⁻¹), where g has positive
            # curvature.
            gg = g_flat @ g_flat
            gHg = g_flat @ (hess @ g_flat)
            cauchy = gg * jnp.sqrt(gg) / jnp.where(gHg > 0, gHg, 1.0)
            fallback = jnp.where((gHg > 0) & (gg > 0) & jnp.isfinite(cauchy), cauchy, fallback)
        radius_used = jnp.where(
            automatic, jnp.where(interior & (newton_norm > 0), newton_norm, fallback), radius
        )

        def newton_branch(_):
            predicted = -(g_flat @ newton + 0.5 * newton @ (hess @ newton))
            return newton, predicted, jnp.asarray(linalg.SolverStatus.CONVERGED, jnp.int32)

        def exact_branch(_):
            result = linalg.trust_region_exact(hess, g_flat, radius_used)
            return result.step, result.predicted_reduction, result.status.astype(jnp.int32)

        q, predicted, status = jax.lax.cond(interior, newton_branch, exact_branch, None)
        p = q if scale is None else q / scale
        step = unravel(p.astype(g_flat.dtype))
        return step, predicted, jnp.zeros((), jnp.int32), status, radius_used, scale
    if subproblem == "steihaug_cg":
        result = linalg.steihaug_cg(op.matvec, g, radius, rtol=cg_rtol, max_steps=max_cg_steps)
        return (result.step, result.predicted_reduction, result.num_steps, result.status,
                radius, None)  # fmt: skip
    if subproblem == "dogleg":
        result = linalg.dogleg(op.matvec, g, radius, rtol=cg_rtol, max_steps=max_cg_steps)
    else:
        result = linalg.cauchy_point(op.matvec, g, radius)
    return result.step, result.predicted_reduction, result.num_steps, result.status, radius, None


def update_scale(scale, hess):
    """MINPACK's monotone diagonal scaling from the curvature's diagonal.

    ``D_j ← max(D_j, sqrt|H_jj|)``, starting from ``D = 0`` (the initial state) and
    with ``D_j = 1`` where ``H_jj`` is 0 at the first point: for ``f = ½‖r‖²`` and
    ``H ≈ JᵀJ`` this is the Jacobian column norm of Moré (1978, eq. 6.2; MINPACK
    ``lmder``, ``mode = 1``, which also sets ``D_j = 1`` for a zero column at the
    start), and the region ``‖D p‖ ≤ Δ`` is invariant to a
    diagonal rescaling of the parameters. Never decreasing, the scaling cannot undo
    the radius the iteration has learned (Moré 1978 §6).
    """
    d = jnp.sqrt(jnp.abs(jnp.diagonal(hess)))
    scale = jnp.maximum(scale, jnp.where(jnp.isfinite(d), d, 0.0))
    return jnp.where(scale > 0, scale, 1.0)


def scale_by_trust_region(
    initial_radius: float | jax.Array | None = None,
    max_radius: float | jax.Array = 1e10,
    *,
    subproblem: str = "exact",
    eta: float | jax.Array = 1e-4,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
    scaling: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Trust-region step from the Hessian of ``value_fn``, tested before it is taken.

    The incoming updates are taken as the gradient ``g``; the Hessian comes from
    ``value_fn``. The output ``u`` has the gradient's sign: an accepted step ``p``
    is returned as ``u = −p`` and a rejected one as zeros, so the alias uses
    ``learning_rate = 1``. Rescaling ``u`` or a line search after this block
    changes a step that was already tested at ``params − u``.

    Args:
      initial_radius: Δ₀. ``None``: with the exact subproblem the first step is the
        Newton step ``−H⁻¹g`` when ``H`` is positive definite, and Δ₀ is its
        (scaled) length ``‖D p_N‖`` (so a model that predicts well is trusted in full
        from the start); otherwise, with diagonal scaling, the length of the
        scaled Cauchy step (Dennis & Schnabel 1983, A6.4.1) where the gradient
        direction has positive curvature, else ‖D θ₀‖ (MINPACK's start, Moré
        1978 §6), else 1; for the other subproblems, and unscaled, Δ₀ = 1
        (scipy's ``initial_trust_radius``).
      max_radius: Δ_max (``> 0``; ``inf`` leaves the radius uncapped).
      subproblem: ``"exact"`` (dense, small ``n``), ``"steihaug_cg"`` (matrix-free),
        ``"dogleg"`` or ``"cauchy"``.
      eta: acceptance threshold η on ρ, in ``[0, ¼)``.
      max_cg_steps: CG cap for ``"steihaug_cg"`` and ``"dogleg"``.
      cg_rtol: CG relative tolerance for those.
      scaling: ``"diagonal"`` bounds the scaled step, ``‖D p‖ ≤ Δ``, with ``D``
        from the Hessian's diagonal, ``D_j = max_k sqrt|H_jj(θ_k)|`` over the
        points so far (:func:`update_scale`, the scaling of MINPACK's
        Levenberg–Marquardt; the subproblem is solved for ``D⁻¹HD⁻¹``, which makes
        the method invariant to a diagonal rescaling of the parameters and lets
        one radius fit parameters of very different sizes); ``"none"`` bounds
        ``‖p‖``. ``None``: ``"diagonal"`` for the exact subproblem (it has the
        dense Hessian), ``"none"`` for the matrix-free ones, which accept only
        ``"none"``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=``.

    References:
      Nocedal & Wright (2006), Numerical Optimization, Alg. 4.1 (radius update),
      §4.1 (Cauchy point, dogleg), Alg. 4.3 (exact), Alg. 7.2 (Steihaug CG);
      Moré & Sorensen (1983). Scaling: Moré (1978), "The Levenberg–Marquardt
      algorithm: implementation and theory", §6; Conn, Gould & Toint (2000),
      Trust-Region Methods, §6.7 (scaled norms).
    """
    fn_name = "scale_by_trust_region"
    check_choice(fn_name, "subproblem", subproblem, SUBPROBLEMS)
    check_positive(fn_name, "initial_radius", initial_radius)
    check_positive(fn_name, "max_radius", max_radius, allow_inf=True)
    check_in_range(fn_name, "eta", eta, 0.0, 0.25)
    check_count(fn_name, "max_cg_steps", max_cg_steps)
    check_positive(fn_name, "cg_rtol", cg_rtol)
    scaled = _resolve_scaling(fn_name, scaling, subproblem) == "diagonal"

    if initial_radius is None:
        # The exact subproblem starts from the Newton step (see _solve_subproblem).
        initial_radius = jnp.inf if subproblem == "exact" else 1.0

    def init_fn(params: PyTree) -> ScaleByTrustRegionState:
        dtype = tree_dtype(params)
        return ScaleByTrustRegionState(
            radius=jnp.asarray(initial_radius, dtype),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            info=_initial_info(dtype),
            scale=jnp.zeros((tree_size(params) if scaled else 0,), dtype),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        fn = bind_value_fn(fn_name, value_fn, extra)
        dtype = tree_dtype(params)
        op = hessian_operator(fn, params)
        f0 = op.value if value is None else jnp.asarray(value, dtype)
        radius = state.radius
        scale = state.scale if scaled else None
        step, predicted, cg_steps, status, radius, scale = _solve_subproblem(
            subproblem, op, updates, radius, cg_rtol, max_cg_steps, scale, tree_ravel(params)[0]
        )
        u = tree_scale(-1.0, step)
        # f and ∇f at the trial point in one pass: the next point's, if accepted.
        new_value, new_grad = jax.value_and_grad(fn)(tree_sub(params, u))
        rho, accepted, actual = acceptance(f0, new_value, predicted, eta)
        new_radius, step_norm = _next_radius(
            radius, rho, actual, step, updates, scale, jnp.asarray(max_radius, dtype)
        )
        u = tree_where(accepted, u, jax.tree.map(jnp.zeros_like, u))
        info = TrustRegionInfo(
            rho=rho.astype(dtype),
            predicted_reduction=predicted.astype(dtype),
            actual_reduction=actual.astype(dtype),
            step_norm=step_norm.astype(dtype),
            rejected=~accepted,
            cg_steps=jnp.asarray(cg_steps, jnp.int32),
            subproblem_status=jnp.asarray(status, jnp.int32),
        )
        new_state = ScaleByTrustRegionState(
            radius=new_radius.astype(dtype),
            value=jnp.where(accepted, new_value, f0).astype(dtype),
            grad=tree_where(accepted, new_grad, op.grad if grad is None else grad),
            info=info,
            scale=state.scale if scale is None else scale.astype(dtype),
        )
        return u, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _resolve_scaling(fn_name: str, scaling: str | None, subproblem: str) -> str:
    """The scaling option, with ``None`` resolved for the subproblem; checked."""
    check_choice(fn_name, "scaling", scaling, SCALINGS + (None,))
    if scaling is None:
        return "diagonal" if subproblem == "exact" else "none"
    if scaling == "diagonal" and subproblem != "exact":
        raise ValueError(
            f"{fn_name}: scaling='diagonal' needs subproblem='exact' (the Hessian's "
            f"diagonal comes from the dense Hessian), got subproblem={subproblem!r}"
        )
    return scaling


def _next_radius(radius, rho, actual, step, grad, scale, max_radius):
    """The next radius and the step's length in the trust region's norm.

    Scaled (``scale`` is ``D``): MINPACK's rule on ``‖D p‖`` (:func:`update_radius_minpack`,
    with the slope ``gᵀp`` for its interpolation); unscaled (``scale`` is ``None``):
    Nocedal & Wright's Alg. 4.1 on ``‖p‖`` (:func:`update_radius`).
    """
    if scale is None:
        step_norm = tree_norm(step)
        return update_radius(radius, rho, step_norm, max_radius), step_norm
    step_norm = jnp.linalg.norm(scale * tree_ravel(step)[0])
    slope = tree_vdot(grad, step).astype(step_norm.dtype)
    return update_radius_minpack(radius, rho, step_norm, actual, slope, max_radius), step_norm


def trust_region(
    initial_radius: float | jax.Array | None = None,
    max_radius: float | jax.Array = 1e10,
    *,
    subproblem: str = "exact",
    eta: float | jax.Array = 1e-4,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
    scaling: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Trust-region Newton method (Nocedal & Wright 2006, Alg. 4.1).

    Each step minimizes ``m(p) = f + g·p + ½ pᵀ∇²f p`` subject to ``‖D p‖ ≤ Δ``, takes
    it if the gain ratio ρ exceeds ``eta`` and adapts Δ from ρ. The step is tested
    inside the block, so the learning rate is fixed at 1: ``optax.apply_updates``
    never increases the loss.

    Args:
      initial_radius: Δ₀; ``None`` starts the exact subproblem from the Newton step
        when ``∇²f`` is positive definite, else from the scaled Cauchy step (see
        :func:`scale_by_trust_region`).
      max_radius: Δ_max (``> 0``; ``inf`` leaves the radius uncapped).
      subproblem: ``"exact"`` | ``"steihaug_cg"`` | ``"dogleg"`` | ``"cauchy"``.
      eta: acceptance threshold η.
      max_cg_steps: CG cap for ``"steihaug_cg"``/``"dogleg"``.
      cg_rtol: CG tolerance for those.
      scaling: ``"diagonal"`` (the region ``‖D p‖ ≤ Δ`` with ``D`` from the
        Hessian's diagonal, the default of the exact subproblem) or ``"none"``
        (see :func:`scale_by_trust_region`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import newtonjax as nj
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, 2.0])) ** 2)
      >>> opt = nj.trust_region(initial_radius=10.0)
      >>> w = jnp.zeros(2)
      >>> state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
      >>> print(jnp.round(optax.apply_updates(w, updates), 5))
      [1. 2.]

    References:
      Nocedal & Wright (2006), Numerical Optimization, Ch. 4 and §7.1.
    """
    return optax.chain(
        scale_by_trust_region(
            initial_radius,
            max_radius,
            subproblem=subproblem,
            eta=eta,
            max_cg_steps=max_cg_steps,
            cg_rtol=cg_rtol,
            scaling=scaling,
        ),
        optax.scale(-1.0),
    )
