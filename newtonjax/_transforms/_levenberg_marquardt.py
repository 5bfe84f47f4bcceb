"""Levenberg–Marquardt as an optax transform, composed from small parts.

Descent × search, in optimistix's terms: the descent is the damped Gauss–Newton
step ``(G + μD) p = −g`` (:mod:`newtonjax.linalg._spectral` for the dense solver,
:func:`~newtonjax.linalg.cg` otherwise), optionally corrected by the geodesic
acceleration (:mod:`._geodesic`, Transtrum & Sethna 2012); the search is a rule for
``μ`` from the gain ratio ``ρ`` (:mod:`._damping`): a trust region on ``‖D^{1/2}p‖``
whose radius sets ``μ`` through the secular equation (Moré 1978, MINPACK's
``lmder``), or Nielsen's (1999) direct update of ``μ``. ``G`` and ``D`` come from
the structured ``value_fn`` (:mod:`._structured`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax import linalg
from newtonjax._checks import check_choice, check_count, check_in_range, check_positive
from newtonjax._curvature import GGNOperator
from newtonjax._transforms._common import acceptance, bound_kwargs
from newtonjax._transforms._damping import (
    damping_bounds,
    initial_radius,
    marquardt_scaling,
    nielsen_initial_damping,
    nielsen_update,
    secular_damping,
    trust_region_radius_update,
)
from newtonjax._transforms._geodesic import GeodesicStep, accelerate, acceleration_rhs
from newtonjax._transforms._structured import (
    DenseCurvature,
    curvature_along,
    dense_curvature,
    ggn_diagonal,
    structured_operator,
)
from newtonjax._tree import (
    PyTree,
    tree_dtype,
    tree_norm,
    tree_ravel,
    tree_sub,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)

__all__ = [
    "LevenbergMarquardtInfo",
    "ScaleByLevenbergMarquardtState",
    "gradient_cosine",
    "scale_by_levenberg_marquardt",
    "levenberg_marquardt",
    # the damping rules, re-exported for their tests and for readers
    "nielsen_update",
    "secular_damping",
    "trust_region_radius_update",
]

SOLVERS = ("dense", "cg")
SCALINGS = ("identity", "marquardt")

DAMPING_UPDATES = ("trust_region", "nielsen")


class LevenbergMarquardtInfo(NamedTuple):
    """Diagnostics of the last Levenberg–Marquardt step (all scalars).

    The damping the step was solved with is the state's ``damping`` (trust-region
    rule) or the previous state's ``damping`` (Nielsen's rule).

    Attributes:
      rho: gain ratio actual / predicted reduction (``-inf`` for a non-finite trial).
      predicted_reduction: the quadratic model's decrease along the damped step
        (the velocity) ``p``: ``m(0) − m(p) = −gᵀp − ½ pᵀGp`` (for the dense solver
        in the cancellation-free form ``½ pᵀGp + μ‖D^{1/2}p‖²``).
      actual_reduction: ``f(θ) − f(θ + step)`` at the step that was tried.
      step_norm: ``‖step‖``.
      rejected: whether the step was rejected (the update is zero).
      acceleration_ratio: ``2‖D^{1/2}a‖ / ‖D^{1/2}p‖`` of the geodesic acceleration
        ``a`` (0 without ``geodesic_acceleration``).
      accelerated: whether the tried step was ``p + ½a`` rather than ``p``.
      cg_steps: CG iterations (``solver="cg"``, both solves), else 0.
      cg_status: :class:`newtonjax.linalg.SolverStatus` code of the (first) CG solve,
        else 0.
      gradient_cosine: MINPACK's ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖)`` at the point the
        update started from, with the Jacobian built there (see
        :func:`gradient_cosine`); meaningful for least squares (identity loss), 0
        before the first update; ``None`` where the rule has no ``diag(JᵀJ)``
        (``solver="cg"`` with ``scaling="identity"``).
    """

    rho: jax.Array
    predicted_reduction: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    rejected: jax.Array
    acceleration_ratio: jax.Array
    accelerated: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array
    gradient_cosine: jax.Array | None = None


class ScaleByLevenbergMarquardtState(NamedTuple):
    """State of :func:`scale_by_levenberg_marquardt`.

    Attributes:
      damping: ``μ`` (scalar). Nielsen's rule: the damping of the next step (with
        ``relative_initial_damping`` the factor ``τ`` until the first update).
        Trust-region rule: the damping the last step was solved with.
      damping_growth: Nielsen's ``ν``, the factor applied to ``μ`` at the next
        rejection (scalar, 2 after an accepted step; unused by the trust-region rule).
      radius: trust-region radius ``Δ`` on ``‖D^{1/2}p‖`` (scalar). Trust-region rule:
        the radius of the next step (0 until the first update). Nielsen's rule: the
        radius the last step implied, ``‖D^{1/2}p‖`` (Moré 1978, §2).
      scaling_diagonal: the running maximum of ``diag(G)`` (``scaling="marquardt"``;
        ones for ``"identity"``), a pytree like ``params``.
      num_updates: int32, updates so far (rejected ones included).
      value: ``f`` at the point the last update moves to, ``params − u`` (the trial
        point if the step was accepted, else ``params``); ``inf`` before the first
        update. With ``grad`` it follows optax's convention
        (``optax.value_and_grad_from_state``), so a loop need not evaluate ``f``
        again there.
      grad: ``∇f`` at that point (zeros before the first update).
      info: diagnostics of the last step.
    """

    damping: jax.Array
    damping_growth: jax.Array
    radius: jax.Array
    scaling_diagonal: PyTree
    num_updates: jax.Array
    value: jax.Array
    grad: PyTree
    info: LevenbergMarquardtInfo


def gradient_cosine(grad: jax.Array, column_sq_norms: jax.Array, value: jax.Array) -> jax.Array:
    """MINPACK's gradient test ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖)`` of ``f = ½‖r‖²``.

    ``grad`` is ``Jᵀr`` (flat), ``column_sq_norms`` the ``‖J_j‖²`` (``diag(JᵀJ)``)
    and ``value`` is ``f``, so ``‖r‖ = √(2f)``. A component with ``J_jᵀ r = 0``
    counts 0 (Moré, Garbow & Hillstrom 1980, MINPACK-1 User Guide §2.3).
    """
    dtype = grad.dtype
    tiny = jnp.finfo(dtype).tiny
    value = jnp.asarray(value, dtype)
    norms = jnp.sqrt(jnp.maximum(column_sq_norms.astype(dtype), 0.0))
    denom = norms * jnp.sqrt(2.0 * jnp.maximum(value, 0.0))
    ratio = jnp.where(grad == 0, 0.0, jnp.abs(grad) / jnp.maximum(denom, tiny))
    return jnp.max(ratio, initial=0.0)


def _lm_info(dtype, cosine: bool) -> LevenbergMarquardtInfo:
    zero = jnp.zeros((), dtype)
    return LevenbergMarquardtInfo(
        rho=zero,
        predicted_reduction=zero,
        actual_reduction=zero,
        step_norm=zero,
        rejected=jnp.zeros((), bool),
        acceleration_ratio=zero,
        accelerated=jnp.zeros((), bool),
        cg_steps=jnp.zeros((), jnp.int32),
        cg_status=jnp.zeros((), jnp.int32),
        gradient_cosine=zero if cosine else None,
    )


class _Gradient(NamedTuple):
    """The incoming updates (the gradient ``g``) as a pytree and flat in the real dtype."""

    tree: PyTree
    flat: jax.Array
    unravel: Any


def _gradient(updates: PyTree, dtype) -> _Gradient:
    flat, unravel = tree_ravel(updates)
    return _Gradient(updates, flat.astype(dtype), unravel)


class _Velocity(NamedTuple):
    """The damped step ``p`` with the gradient's sign (``step = −p``) and its model.

    ``predicted`` is ``m(0) − m(p)``; ``length`` is ``‖D^{1/2}p‖``.
    """

    step: PyTree
    predicted: jax.Array
    length: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class _SpectralSystem(NamedTuple):
    """``(G + μD)`` solved for every ``μ`` through one spectrum (the dense solver)."""

    curvature: DenseCurvature
    solve: linalg.DampedSpectralSolve
    unravel: Any

    @classmethod
    def build(cls, curv: DenseCurvature, g: _Gradient, inv_sqrt_d) -> _SpectralSystem:
        solve = linalg.damped_spectral_solve(
            g.flat, jacobian=curv.jacobian, matrix=curv.matrix, inv_sqrt_scale=inv_sqrt_d
        )
        return cls(curv, solve, g.unravel)

    def velocity(self, mu: jax.Array) -> _Velocity:
        x, length = self.solve.step(mu)
        # m(0) − m(p) = ½ pᵀGp + μ‖D^{1/2}p‖² for (G + μD)p = −g: no cancellation.
        predicted = 0.5 * curvature_along(self.curvature, x) + mu * length**2
        zero = jnp.zeros((), jnp.int32)
        return _Velocity(self.unravel(x), predicted, length, zero, zero)

    def solve_rhs(self, rhs: jax.Array, mu: jax.Array):
        x, length = self.solve.solve(rhs, mu)
        return x, length, jnp.zeros((), jnp.int32)


class _CGSystem(NamedTuple):
    """``(G + μD)`` solved matrix-free by CG (two linearized products per iteration)."""

    op: GGNOperator
    g: _Gradient
    scale_d: jax.Array
    unravel_params: Any
    cg_options: dict

    def _matvec(self, mu):
        d_tree = self.unravel_params(mu * self.scale_d)
        return lambda v: jax.tree.map(
            lambda gv, dv, vv: gv + (dv * vv).astype(gv.dtype), self.op.matvec(v), d_tree, v
        )

    def _length(self, x_flat):
        return jnp.sqrt(jnp.sum(self.scale_d * x_flat**2))

    def velocity(self, mu: jax.Array) -> _Velocity:
        result = linalg.cg(self._matvec(mu), self.g.tree, **self.cg_options)
        step = result.x
        predicted = tree_vdot(self.g.tree, step) - 0.5 * tree_vdot(step, self.op.matvec(step))
        length = self._length(tree_ravel(step)[0].astype(self.scale_d.dtype))
        return _Velocity(
            step,
            predicted,
            length,
            result.num_steps.astype(jnp.int32),
            result.status.astype(jnp.int32),
        )

    def solve_rhs(self, rhs: jax.Array, mu: jax.Array):
        result = linalg.cg(self._matvec(mu), self.g.unravel(rhs), **self.cg_options)
        x = tree_ravel(result.x)[0].astype(self.scale_d.dtype)
        return x, self._length(x), result.num_steps.astype(jnp.int32)


def _curvature(solver, marquardt, relative, op, params, value_fn, kwargs, first):
    """The dense ``G`` (dense solver) and ``diag(G)`` where a rule reads it (else ``None``)."""
    least_squares = value_fn.identity_loss_hessian
    curv = None
    if solver == "dense":
        curv = dense_curvature(op, params, least_squares, value_fn.bind(**kwargs)[0])
        diag_g = curv.diagonal
    elif marquardt:
        diag_g = ggn_diagonal(op, params, least_squares)
    elif relative:
        # Only the first update needs diag(G) here (cond: not evaluated later).
        diag_g = jax.lax.cond(
            first,
            lambda: ggn_diagonal(op, params, least_squares),
            lambda: jnp.zeros((tree_ravel(params)[0].shape[0],), tree_dtype(params)),
        )
    else:
        diag_g = None
    if diag_g is not None:
        diag_g = jnp.where(jnp.isfinite(diag_g), diag_g, 0.0)
    return curv, diag_g


def _scaling(marquardt, state, diag_g, g: _Gradient):
    """The running maximum of ``diag(G)``, ``D`` and ``D^{-1/2}`` (``None`` for ``D = I``)."""
    running = tree_ravel(state.scaling_diagonal)[0].astype(g.flat.dtype)
    if not marquardt:
        return running, jnp.ones_like(g.flat), None
    running = jnp.maximum(running, diag_g)
    scale_d = marquardt_scaling(running)
    return running, scale_d, 1.0 / jnp.sqrt(scale_d)


def _gain_ratio(f0, new_value, predicted, eta, params, step):
    """``ρ``, acceptance and the actual reduction, with the rounding-level exception.

    When both reductions are at the rounding level of ``f``, ``ρ`` is noise and the
    model is trusted (``ρ = 1``; Conn, Gould & Toint 2000, §17.4.2), so the last
    Gauss–Newton steps of a tight solve are not rejected for rounding errors in ``f``.
    """
    rho, accepted, actual = acceptance(f0, new_value, predicted, eta)
    noise = 10.0 * jnp.finfo(f0.dtype).eps * jnp.abs(f0)
    moves = jnp.any(tree_ravel(tree_sub(params, step))[0] != tree_ravel(params)[0])
    rounding = (
        jnp.isfinite(new_value)
        & (predicted > 0)
        & (predicted <= noise)
        & (jnp.abs(actual) <= noise)
        & moves
    )
    return jnp.where(rounding, 1.0, rho), accepted | rounding, actual


def _resolve_defaults(solver, scaling, damping_update, geodesic_acceleration):
    dense = solver == "dense"
    if scaling is None:
        scaling = "marquardt" if dense else "identity"
    if damping_update is None:
        damping_update = "trust_region" if dense else "nielsen"
    if geodesic_acceleration is None:
        geodesic_acceleration = dense
    return scaling, damping_update, bool(geodesic_acceleration)


def scale_by_levenberg_marquardt(
    initial_damping: float | jax.Array = 1e-3,
    *,
    relative_initial_damping: bool = True,
    scaling: str | None = None,
    damping_update: str | None = None,
    initial_radius_factor: float | jax.Array = 10.0,
    geodesic_acceleration: bool | None = None,
    acceleration_ratio: float | jax.Array = 0.75,
    solver: str = "dense",
    eta: float | jax.Array = 0.0,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Levenberg–Marquardt step, tested at ``params − u`` before it is returned.

    The damped step (the *velocity*) solves ``(G + μD) p = −g`` with ``G`` the
    (generalized) Gauss–Newton matrix of the structured ``value_fn``, ``g`` the
    incoming updates and ``D`` a diagonal scaling. With ``geodesic_acceleration`` the
    tried step is ``p + ½a``, where the acceleration solves ``(G + μD) a = −Jᵀ∇²ℓ m_pp``
    with the same factorization and ``m_pp = d²/dt² m(θ + tp)`` is one nested
    forward-mode product (Transtrum & Sethna 2012, eqs. 13–15); ``a`` is used only if
    ``2‖D^{1/2}a‖ ≤ acceleration_ratio · ‖D^{1/2}p‖`` (their ``α``), else the plain
    ``p`` is tried. The gain ratio is ``ρ = (f(θ) − f(θ + step)) / (m(0) − m(p))``
    (the model decrease of the velocity, as GSL's ``lmaccel``); the step is accepted
    iff ``ρ > eta`` (a non-finite trial value rejects it).

    ``μ`` follows one of two rules:

    * ``damping_update="trust_region"`` (Moré 1978; MINPACK's ``lmder``): ``μ`` is
      the smallest damping with ``‖D^{1/2}p‖ ≤ 1.1 Δ`` (see :func:`secular_damping`;
      ``μ = 0`` if the Gauss–Newton step fits), and the radius ``Δ`` follows
      :func:`trust_region_radius_update`. ``Δ₀ = initial_radius_factor ·
      ‖D^{1/2}θ₀‖`` (MINPACK's ``factor``; ``initial_radius_factor`` alone if
      ``θ₀ = 0``), then at most the first step's length. Dense solver only.
    * ``damping_update="nielsen"`` (Nielsen 1999)::

        accepted:  μ ← μ · max(⅓, 1 − (2ρ − 1)³),   ν ← 2
        rejected:  μ ← μ · ν,                        ν ← 2ν

    ``μ`` and ``Δ`` are kept in ``[sqrt(tiny), sqrt(max)]`` of the dtype. The output
    ``u = −step`` (gradient sign) for an accepted step and zeros for a rejected one,
    so the alias uses learning rate 1; rescaling ``u`` or a line search after this
    block changes a step that was already tested.

    Defaults depend on the (build-time) solver. Dense: ``scaling="marquardt"``,
    ``damping_update="trust_region"``, ``geodesic_acceleration=True`` — Moré's
    algorithm plus geodesic acceleration, which reaches the certified values of all
    54 NIST StRD cases (``tests/test_nist_lm.py``). CG: ``scaling="identity"``,
    ``damping_update="nielsen"``, ``geodesic_acceleration=False``, because the exact
    ``diag(G)`` costs ``n`` products, the radius rule needs a spectrum, and the
    acceleration a second CG solve.

    Args:
      initial_damping: Nielsen's rule: ``μ₀``, or ``τ`` with
        ``relative_initial_damping`` (unused by the trust-region rule).
      relative_initial_damping: Nielsen's rule: take ``μ₀ = τ · max_i G_ii / D_ii``
        at the first update (Madsen, Nielsen & Tingleff 2004, §3.2: ``τ = 1e-3``
        for a rough start, ``1e-6`` for a good one); otherwise ``μ₀ =
        initial_damping``.
      scaling: ``"identity"`` (``D = I``, Levenberg) or ``"marquardt"`` (``D =
        diag(G)``, kept as the running maximum over the iterations and floored at
        ``eps·max D``, as MINPACK's ``lmder`` does; invariant to a rescaling of
        the parameters); ``None`` picks by solver (see above).
      damping_update: ``"trust_region"`` or ``"nielsen"``; ``None`` picks by solver.
      initial_radius_factor: trust-region rule: ``Δ₀ / ‖D^{1/2}θ₀‖`` (MINPACK's
        ``factor``, which it recommends in ``[0.1, 100]``).
      geodesic_acceleration: add the second-order correction ``½a`` (one more
        nested JVP of the model per step, and one back-substitution with the dense
        solver or a second CG solve); ``None`` picks by solver.
      acceleration_ratio: ``α``, the largest ``2‖D^{1/2}a‖/‖D^{1/2}p‖`` for which the
        acceleration is used (Transtrum & Sethna: 0.75).
      solver: ``"dense"`` (SVD of the scaled Jacobian for least squares, ``eigh``
        of the scaled GGN otherwise) or ``"cg"`` (matrix-free; with
        ``scaling="marquardt"`` the exact ``diag(G)`` costs ``n`` extra products per
        step).
      eta: acceptance threshold on ``ρ`` (Nielsen: 0; MINPACK: 1e-4).
      max_cg_steps: CG iteration cap (``solver="cg"``), default ``10 n``.
      cg_rtol: CG relative residual tolerance, default ``sqrt(eps)``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs a
      structured ``value_fn=`` (and accepts ``value=``, ``f(θ)``).

    Raises:
      ValueError: for an unknown ``scaling``/``damping_update``/``solver``, a
        non-positive numeric argument, ``eta`` outside ``[0, 1)``, or
        ``damping_update="trust_region"`` with ``solver="cg"``.

    References:
      Levenberg (1944); Marquardt (1963); Moré (1978), "The Levenberg–Marquardt
      algorithm: implementation and theory", Lecture Notes in Math. 630 (§2 the
      trust-region view, §3 the scaling ``D``, §5 the secular equation, §7 the
      radius update, as in MINPACK's ``lmder``/``lmpar``); Hebden (1973);
      Transtrum & Sethna (2012), "Improvements to the Levenberg–Marquardt
      algorithm for nonlinear least-squares minimization", arXiv:1201.5885, §3
      (geodesic acceleration); Nielsen (1999), "Damping parameter in Marquardt's
      method", IMM-REP-1999-05; Madsen, Nielsen & Tingleff (2004), "Methods for
      non-linear least squares problems", §3.2, Alg. 3.16; Nocedal & Wright
      (2006), §10.3.
    """
    fn_name = "scale_by_levenberg_marquardt"
    check_choice(fn_name, "solver", solver, SOLVERS)
    if scaling is not None:
        check_choice(fn_name, "scaling", scaling, SCALINGS)
    if damping_update is not None:
        check_choice(fn_name, "damping_update", damping_update, DAMPING_UPDATES)
    scaling, damping_update, geodesic = _resolve_defaults(
        solver, scaling, damping_update, geodesic_acceleration
    )
    if damping_update == "trust_region" and solver != "dense":
        raise ValueError(
            f"{fn_name}: damping_update='trust_region' needs solver='dense' (the radius "
            "rule solves for μ on the spectrum of G); use damping_update='nielsen' "
            "with solver='cg'"
        )
    check_positive(fn_name, "initial_damping", initial_damping)
    check_positive(fn_name, "initial_radius_factor", initial_radius_factor)
    check_positive(fn_name, "acceleration_ratio", acceleration_ratio)
    check_in_range(fn_name, "eta", eta, 0.0, 1.0)
    check_count(fn_name, "max_cg_steps", max_cg_steps)
    check_positive(fn_name, "cg_rtol", cg_rtol)
    trust_region = damping_update == "trust_region"
    marquardt = scaling == "marquardt"
    # Nielsen's relative start reads diag(G) at the first update.
    relative = relative_initial_damping and not trust_region
    # diag(JᵀJ) at params is at hand for the dense solver and Marquardt's scaling.
    cosine = solver == "dense" or marquardt
    cg_options = dict(rtol=cg_rtol, max_steps=max_cg_steps)

    def init_fn(params: PyTree) -> ScaleByLevenbergMarquardtState:
        dtype = tree_dtype(params)
        fill = jnp.zeros_like if marquardt else jnp.ones_like
        return ScaleByLevenbergMarquardtState(
            damping=jnp.asarray(initial_damping, dtype),
            damping_growth=jnp.asarray(2.0, dtype),
            radius=jnp.zeros((), dtype),
            scaling_diagonal=jax.tree.map(fill, params),
            num_updates=jnp.zeros((), jnp.int32),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            info=_lm_info(dtype, cosine),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        op, fn = structured_operator(fn_name, value_fn, params, extra)
        kwargs = bound_kwargs(value_fn, extra)
        dtype = tree_dtype(params)
        f0 = jnp.asarray(op.value if value is None else value, dtype)
        first = state.num_updates == 0
        lo, hi = damping_bounds(dtype)
        g = _gradient(updates, dtype)
        curv, diag_g = _curvature(solver, marquardt, relative, op, params, value_fn, kwargs, first)
        running, scale_d, inv_sqrt_d = _scaling(marquardt, state, diag_g, g)

        # The damping of this step, then the damped system's solution (the velocity).
        radius = state.radius.astype(dtype)
        if solver == "dense":
            system = _SpectralSystem.build(curv, g, inv_sqrt_d)
            if trust_region:
                size = jnp.linalg.norm(jnp.sqrt(scale_d) * tree_ravel(params)[0].astype(dtype))
                radius0 = initial_radius(size, jnp.asarray(initial_radius_factor, dtype))
                radius = jnp.clip(jnp.where(first, radius0, radius), lo, hi)
                mu = secular_damping(system.solve.values, system.solve.coefficients, radius)
        else:
            system = _CGSystem(op, g, scale_d, tree_ravel(params)[1], cg_options)
        if not trust_region:
            ratio_diag = None if diag_g is None or not relative else diag_g / scale_d
            mu = nielsen_initial_damping(state.damping.astype(dtype), ratio_diag, first, lo, hi)
        velocity = system.velocity(mu)
        trial = GeodesicStep(velocity.step, jnp.zeros((), dtype), jnp.zeros((), bool))
        cg_steps = velocity.cg_steps
        if geodesic:
            jac = None if curv is None else curv.jacobian
            rhs = acceleration_rhs(value_fn, op, params, velocity.step, kwargs, dtype, jac)
            w, w_length, w_steps = system.solve_rhs(rhs, mu)
            trial = accelerate(
                velocity.step, velocity.length, w, w_length, acceleration_ratio, g.unravel, dtype
            )
            cg_steps = cg_steps + w_steps

        # f and ∇f at the trial point in one pass: the next point's, if accepted.
        step = trial.step
        new_value, new_grad = jax.value_and_grad(fn)(tree_sub(params, step))
        predicted = velocity.predicted.astype(dtype)
        rho, accepted, actual = _gain_ratio(f0, new_value, predicted, eta, params, step)
        if trust_region:
            radius = jnp.where(first, jnp.minimum(radius, velocity.length), radius)
            new_radius = trust_region_radius_update(
                radius, velocity.length, mu, rho, predicted, actual, f0, new_value.astype(dtype)
            )
            new_mu, new_nu = mu, state.damping_growth.astype(dtype)
        else:
            new_radius = velocity.length
            new_mu, new_nu = nielsen_update(mu, state.damping_growth.astype(dtype), rho, accepted)
        info = LevenbergMarquardtInfo(
            rho=rho.astype(dtype),
            predicted_reduction=predicted,
            actual_reduction=actual.astype(dtype),
            step_norm=tree_norm(step).astype(dtype),
            rejected=~accepted,
            acceleration_ratio=trial.ratio.astype(dtype),
            accelerated=trial.accelerated,
            cg_steps=cg_steps,
            cg_status=velocity.cg_status,
            gradient_cosine=gradient_cosine(g.flat, diag_g, f0) if cosine else None,
        )
        new_state = ScaleByLevenbergMarquardtState(
            damping=jnp.clip(new_mu, 0.0 if trust_region else lo, hi).astype(dtype),
            damping_growth=new_nu.astype(dtype),
            radius=jnp.clip(new_radius, lo, hi).astype(dtype),
            scaling_diagonal=tree_ravel(params)[1](running),
            num_updates=state.num_updates + 1,
            value=jnp.where(accepted, new_value, f0).astype(dtype),
            grad=tree_where(accepted, new_grad, op.grad if grad is None else grad),
            info=info,
        )
        return tree_where(accepted, step, tree_zeros_like(step)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def levenberg_marquardt(
    initial_damping: float | jax.Array = 1e-3,
    *,
    relative_initial_damping: bool = True,
    scaling: str | None = None,
    damping_update: str | None = None,
    initial_radius_factor: float | jax.Array = 10.0,
    geodesic_acceleration: bool | None = None,
    acceleration_ratio: float | jax.Array = 0.75,
    solver: str = "dense",
    eta: float | jax.Array = 0.0,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Levenberg–Marquardt method: Moré's trust region with geodesic acceleration.

    Each step solves ``(G + μD) p = −∇f(θ)`` with ``G`` the Gauss–Newton matrix
    ``JᵀJ`` (or the generalized ``Jᵀ∇²ℓJ``) and ``D`` the running maximum of
    ``diag(G)``; adds the geodesic acceleration ``½a``, ``(G + μD) a = −Jᵀ r_pp``,
    when it is small next to ``p``; takes the step iff the gain ratio
    ``ρ = (f(θ) − f(θ + step)) / (m(0) − m(p))`` is positive; and picks ``μ`` so that
    ``‖D^{1/2}p‖`` matches a trust radius updated from ``ρ`` (see
    :func:`scale_by_levenberg_marquardt`). Large ``μ`` gives a short scaled-gradient
    step, ``μ = 0`` the Gauss–Newton step, so convergence is fast near a
    zero-residual solution and global elsewhere (Moré 1978); the acceleration
    follows the curvature of the model manifold along narrow curved valleys
    (Transtrum & Sethna 2012).

    The step is tested inside the block, so the learning rate is fixed at 1:
    ``optax.apply_updates`` never increases the loss. Rescaling the updates after
    this block, or a line search, changes a step that was already tested.

    Args:
      initial_damping: Nielsen's rule: ``μ₀``, or the relative factor ``τ``.
      relative_initial_damping: Nielsen's rule: ``μ₀ = τ · max_i G_ii / D_ii``.
      scaling: ``"identity"`` or ``"marquardt"`` (default for the dense solver).
      damping_update: ``"trust_region"`` (default for the dense solver) or
        ``"nielsen"`` (default for CG).
      initial_radius_factor: ``Δ₀ / ‖D^{1/2}θ₀‖`` for the trust-region rule.
      geodesic_acceleration: use ``½a`` (default for the dense solver).
      acceleration_ratio: largest ``2‖D^{1/2}a‖/‖D^{1/2}p‖`` that uses ``a``.
      solver: ``"dense"`` or ``"cg"``.
      eta: acceptance threshold on ``ρ``.
      max_cg_steps: CG iteration cap for ``solver="cg"``.
      cg_rtol: CG tolerance for ``solver="cg"``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs a
      structured ``value_fn=``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import newtonjax as nj
      >>> x = jnp.array([0.0, 1.0, 2.0, 3.0])
      >>> loss = nj.least_squares_objective(lambda w: w[0] * jnp.exp(w[1] * x) - 2.0 * jnp.exp(-x))
      >>> opt = nj.levenberg_marquardt()
      >>> w = jnp.array([1.0, 0.0])
      >>> state = opt.init(w)
      >>> for _ in range(30):
      ...     updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      ...     w = optax.apply_updates(w, updates)
      >>> print(jnp.round(w, 4))
      [ 2. -1.]

    References:
      Moré (1978), §§2–7; Transtrum & Sethna (2012), arXiv:1201.5885, §3;
      Nielsen (1999); Madsen, Nielsen & Tingleff (2004), §3.2;
      Nocedal & Wright (2006), Numerical Optimization, §10.3.
    """
    return optax.chain(
        scale_by_levenberg_marquardt(
            initial_damping,
            relative_initial_damping=relative_initial_damping,
            scaling=scaling,
            damping_update=damping_update,
            initial_radius_factor=initial_radius_factor,
            geodesic_acceleration=geodesic_acceleration,
            acceleration_ratio=acceleration_ratio,
            solver=solver,
            eta=eta,
            max_cg_steps=max_cg_steps,
            cg_rtol=cg_rtol,
        ),
        optax.scale(-1.0),
    )
