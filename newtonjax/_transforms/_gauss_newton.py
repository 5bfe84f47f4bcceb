"""Gauss–Newton and Levenberg–Marquardt as optax transforms.

Descent × search, in optimistix's terms:

* :func:`gauss_newton` — the descent is the Gauss–Newton direction
  ``(G + damping·I) u = g``, the search optax's backtracking line search started at
  step 1 (the line-search Gauss–Newton method of Nocedal & Wright 2006, §10.3), or a
  fixed learning rate.
* :func:`levenberg_marquardt` — the descent is the damped Gauss–Newton step
  ``(G + μD) p = −g``, optionally corrected by the geodesic acceleration
  (Transtrum & Sethna 2012), the search a trust region on ``‖D^{1/2}p‖`` whose
  radius follows the gain ratio ``ρ`` and sets ``μ`` through the secular equation
  (Moré 1978, MINPACK's ``lmder``), or Nielsen's (1999) direct update of ``μ``
  from ``ρ`` (N&W §10.3).

``G`` is the Gauss–Newton matrix ``JᵀJ`` of a :func:`~newtonjax.least_squares_objective`
or the generalized Gauss–Newton matrix ``Jᵀ∇²ℓJ`` of a
:func:`~newtonjax.composite_objective` (Schraudolph 2002); both are read off the
structured ``value_fn``, so a plain callable is an error.

The dense solver never forms ``JᵀJ`` for a least-squares objective: it builds the
(column-scaled) Jacobian ``J D^{-1/2}`` from ``n`` forward-mode products and takes
its thin SVD ``U S Vᵀ``, so the eigenvalues ``s²`` of the scaled ``G`` come without
squaring the Jacobian's condition number, rank deficiency is detected with the
``rcond`` of :func:`jax.numpy.linalg.lstsq`, and the step is

    u = D^{-1/2} V diag(1 / (s² + μ)) Vᵀ D^{-1/2} g,

where singular values below ``lstsq``'s cutoff ``rcond · s_max`` count as 0: they
are then damped by ``μ``, and dropped only when ``μ = 0``, so an undamped
Gauss–Newton step on a rank-deficient problem is the minimum-norm least-squares
step, exactly as ``lstsq``, while a damped step is the true regularized solution.
(The right-hand side is the incoming gradient, as every optax block assumes, so a
clipped or otherwise transformed gradient is honored.) Levenberg–Marquardt reuses
the same decomposition for the secular equation of its trust region and for the
geodesic acceleration. A composite objective's ``G`` is materialized (``n`` GGN products) and
decomposed by ``eigh``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax import linalg
from newtonjax._curvature import GGNOperator, gauss_newton_operator
from newtonjax._objectives import CompositeObjective
from newtonjax._transforms._common import (
    acceptance,
    bind_value_fn,
    bound_kwargs,
    chain_with_linesearch,
    check_choice,
    check_positive,
)
from newtonjax._tree import (
    PyTree,
    tree_axpy,
    tree_dtype,
    tree_norm,
    tree_ravel,
    tree_sub,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)

__all__ = [
    "GaussNewtonInfo",
    "ScaleByGaussNewtonState",
    "scale_by_gauss_newton",
    "gauss_newton",
    "LevenbergMarquardtInfo",
    "ScaleByLevenbergMarquardtState",
    "scale_by_levenberg_marquardt",
    "levenberg_marquardt",
]

SOLVERS = ("dense", "cg")
SCALINGS = ("identity", "marquardt")
_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- shared


def check_max_cg_steps(fn_name: str, max_cg_steps: Any) -> None:
    """``max_cg_steps`` must be ``None`` or an integer >= 1 (checked if a Python int)."""
    if isinstance(max_cg_steps, bool) or isinstance(max_cg_steps, float):
        raise TypeError(f"{fn_name}: max_cg_steps must be an integer, got {max_cg_steps!r}")
    if isinstance(max_cg_steps, int) and max_cg_steps < 1:
        raise ValueError(f"{fn_name}: max_cg_steps must be >= 1, got {max_cg_steps}")


def structured_operator(
    fn_name: str, value_fn: Callable | None, params: PyTree, extra: dict[str, Any]
) -> tuple[GGNOperator, Callable[[PyTree], jax.Array]]:
    """The Gauss–Newton operator of a structured ``value_fn`` and ``params -> f``.

    Raises:
      TypeError: if ``value_fn`` is missing or carries no residual/model structure.
    """
    fn = bind_value_fn(fn_name, value_fn, extra)
    if not isinstance(value_fn, CompositeObjective):
        raise TypeError(
            f"{fn_name}: the Gauss–Newton matrix needs the objective's structure, but "
            f"value_fn is a plain {type(value_fn).__name__}; build it with "
            "nj.least_squares_objective(residual_fn) for ½‖r(params)‖², or "
            "nj.composite_objective(model_fn, output_loss_fn) for "
            "output_loss_fn(model_fn(params))"
        )
    op = gauss_newton_operator(value_fn, params, **bound_kwargs(value_fn, extra))
    return op, fn


def damping_bounds(dtype) -> tuple[float, float]:
    """``[sqrt(tiny), sqrt(max)]``: a multiplicative damping rule never gets stuck at 0/inf."""
    info = jnp.finfo(dtype)
    return float(info.tiny) ** 0.5, float(info.max) ** 0.5


def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


class _DenseCurvature(NamedTuple):
    """``G`` in ravel order: through the Jacobian (least squares) or as a matrix."""

    jacobian: jax.Array | None  # (m, n), least squares only
    matrix: jax.Array | None  # (n, n), composite objectives only
    diagonal: jax.Array  # (n,) diag(G)


def _dense_curvature(
    op: GGNOperator, params: PyTree, least_squares: bool, model_fn: Callable | None = None
) -> _DenseCurvature:
    flat, unravel = tree_ravel(params)
    if least_squares:
        # The m × n Jacobian in one forward-mode pass over the n basis tangents
        # (cheaper under jit than n replays of the linearization, which XLA
        # evaluates with the residual as a second pass over the same data).
        jac = jax.jacfwd(lambda x: tree_ravel(model_fn(unravel(x)))[0])(flat)
        jac = jac.astype(flat.dtype)
        jac = jnp.where(_all_finite(jac), jac, jnp.zeros_like(jac))
        return _DenseCurvature(jac, None, jnp.sum(jac * jac, axis=0))
    mat = op.as_matrix().astype(flat.dtype)
    mat = jnp.where(_all_finite(mat), 0.5 * (mat + mat.T), jnp.zeros_like(mat))
    return _DenseCurvature(None, mat, jnp.diagonal(mat))


class _Spectrum(NamedTuple):
    """Eigenpairs of the scaled curvature ``Ĝ = D^{-1/2} G D^{-1/2}`` (ravel order)."""

    values: jax.Array  # (n,) eigenvalues; those below the rank cutoff are exactly 0
    vectors: jax.Array  # (n, n) orthonormal eigenvectors, one per column


def _scaled_spectrum(curv: _DenseCurvature, inv_sqrt_d: jax.Array | None) -> _Spectrum:
    """The spectrum of ``Ĝ`` with numerically-zero eigenvalues set to exactly 0.

    A least-squares ``Ĝ = ĴᵀĴ`` comes from the thin SVD ``Ĵ = U S Vᵀ`` of the
    column-scaled Jacobian, so ``s²`` never squares ``Ĵ``'s condition number; a
    singular value below ``lstsq``'s cutoff ``eps · max(m, n) · s_max`` is treated as
    0 (Golub & Van Loan 2013, §5.5.8). A composite ``Ĝ`` is decomposed by ``eigh``
    (negative eigenvalues of the PSD GGN are rounding) with the cutoff
    ``n · eps · λ_max``.
    """
    eps = jnp.finfo(curv.diagonal.dtype).eps
    if curv.jacobian is not None:
        jac = curv.jacobian if inv_sqrt_d is None else curv.jacobian * inv_sqrt_d[None, :]
        m, n = jac.shape
        if m >= n and n <= linalg.SMALL_SVD_MAX_COLUMNS:
            # A few parameters: QR + Jacobi, as accurate and faster in batches.
            s, v, _ = linalg.small_svd(jac)
        else:
            # Thin SVD; for a wide Jacobian (m < n) the full V spans the null space too.
            _, s, vh = jnp.linalg.svd(jac, full_matrices=m < n)
            v = vh.T
        s_max = jnp.max(s) if s.shape[0] else jnp.zeros((), jac.dtype)
        s = jnp.where(s > eps * max(m, n) * s_max, s, 0.0)
        lam = jnp.zeros((n,), jac.dtype).at[: s.shape[0]].set(s * s)
        return _Spectrum(lam, v)
    mat = curv.matrix
    n = mat.shape[0]
    if inv_sqrt_d is not None:
        mat = mat * jnp.outer(inv_sqrt_d, inv_sqrt_d)
    lam, vecs = jnp.linalg.eigh(mat)
    lam = jnp.maximum(lam, 0.0)
    lam = jnp.where(lam > n * eps * jnp.max(lam), lam, 0.0)
    return _Spectrum(lam, vecs)


def _shifted_inverse(lam: jax.Array, damping: jax.Array) -> jax.Array:
    """``1 / (λ + μ)``, and 0 where ``λ + μ = 0`` (the pseudo-inverse of an undamped solve)."""
    shifted = lam + damping
    keep = shifted > 0
    return jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0)


def _in_basis(spec: _Spectrum, b: jax.Array, inv_sqrt_d: jax.Array | None) -> jax.Array:
    """Coordinates ``Vᵀ D^{-1/2} b`` of a right-hand side in the eigenbasis of ``Ĝ``."""
    b_hat = b if inv_sqrt_d is None else b * inv_sqrt_d
    return jnp.matmul(spec.vectors.T, b_hat, precision=_HIGHEST)


def _from_basis(spec: _Spectrum, coef: jax.Array, inv_sqrt_d: jax.Array | None) -> jax.Array:
    """``x = D^{-1/2} V coef`` (non-finite entries replaced by 0)."""
    x = jnp.matmul(spec.vectors, coef, precision=_HIGHEST)
    if inv_sqrt_d is not None:
        x = x * inv_sqrt_d
    return jnp.where(_all_finite(x), x, jnp.zeros_like(x))


def _curvature_along(curv: _DenseCurvature, x: jax.Array) -> jax.Array:
    """``xᵀ G x`` (as ``‖J x‖²`` for least squares)."""
    if curv.jacobian is not None:
        jx = jnp.matmul(curv.jacobian, x, precision=_HIGHEST)
        return jnp.vdot(jx, jx)
    return jnp.vdot(x, jnp.matmul(curv.matrix, x, precision=_HIGHEST))


def _damped_dense_solve(
    curv: _DenseCurvature, b: jax.Array, damping: jax.Array, inv_sqrt_d: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x = (G + damping·D)⁺ b`` via the spectrum of ``Ĝ = D^{-1/2} G D^{-1/2}``.

    Numerically-zero eigenvalues of ``Ĝ`` count as 0 and are then damped: a
    direction is left out only where ``λ + damping = 0`` (an undamped solve, the
    minimum-norm least-squares solution as ``lstsq``).

    Returns:
      ``(x, xᵀ G x, dropped)`` where ``dropped`` says whether directions of zero
      damped curvature were left out (pseudo-inverse).
    """
    spec = _scaled_spectrum(curv, inv_sqrt_d)
    inv = _shifted_inverse(spec.values, damping)
    x = _from_basis(spec, inv * _in_basis(spec, b, inv_sqrt_d), inv_sqrt_d)
    return x, _curvature_along(curv, x), jnp.any(inv == 0)


def ggn_diagonal(op: GGNOperator, params: PyTree, least_squares: bool) -> jax.Array:
    """``diag(G)`` in ravel order from ``n`` matrix-free products, 64 at a time."""
    flat, unravel = tree_ravel(params)
    n = flat.shape[0]

    def entry(i):
        e = jax.nn.one_hot(i, n, dtype=flat.dtype)
        if least_squares:
            je = tree_ravel(op.jvp(unravel(e)))[0]
            return jnp.vdot(je, je).astype(flat.dtype)
        return tree_ravel(op.matvec(unravel(e)))[0][i].astype(flat.dtype)

    return jax.lax.map(entry, jnp.arange(n), batch_size=min(n, 64))


# --------------------------------------------------------------------- Gauss–Newton


class GaussNewtonInfo(NamedTuple):
    """Diagnostics of the last Gauss–Newton direction (all scalars).

    Attributes:
      rank_deficient: the dense solve left out directions of (numerically) zero
        curvature of ``G + damping·I``: the direction is the minimum-norm one.
      cg_steps: CG iterations (``solver="cg"``), else 0.
      cg_status: :class:`newtonjax.linalg.SolverStatus` code of CG, else 0.
    """

    rank_deficient: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class ScaleByGaussNewtonState(NamedTuple):
    """State of :func:`scale_by_gauss_newton`: the last direction's diagnostics."""

    info: GaussNewtonInfo


def _gauss_newton_info() -> GaussNewtonInfo:
    return GaussNewtonInfo(
        rank_deficient=jnp.zeros((), bool),
        cg_steps=jnp.zeros((), jnp.int32),
        cg_status=jnp.zeros((), jnp.int32),
    )


def scale_by_gauss_newton(
    damping: float | jax.Array = 0.0,
    *,
    solver: str = "dense",
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Gauss–Newton direction ``u = (G + damping·I)⁺ g`` of a structured ``value_fn``.

    ``G = JᵀJ`` for :func:`~newtonjax.least_squares_objective` and ``G = Jᵀ∇²ℓJ``
    for :func:`~newtonjax.composite_objective`. The incoming updates are taken as
    the gradient ``g``; the output has the gradient's sign, so chain it with
    ``optax.scale(-learning_rate)`` or use :func:`gauss_newton`. On a linear
    least-squares problem one undamped step lands on the ``lstsq`` solution (the
    minimum-norm one if ``J`` is rank deficient).

    Args:
      damping: ``λ ≥ 0`` added to ``G`` (a fixed Levenberg damping; see
        :func:`scale_by_levenberg_marquardt` for an adaptive one).
      solver: ``"dense"`` (SVD of the ``m × n`` Jacobian for least squares, ``eigh``
        of the ``n × n`` GGN otherwise; small ``n``) or ``"cg"`` (matrix-free CG on
        ``G + λI``, two linearized products per iteration).
      max_cg_steps: CG iteration cap (``solver="cg"``), default ``10 n``.
      cg_rtol: CG relative residual tolerance, default ``sqrt(eps)``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=`` built by :func:`~newtonjax.least_squares_objective` or
      :func:`~newtonjax.composite_objective` (a plain callable raises ``TypeError``).

    References:
      Nocedal & Wright (2006), Numerical Optimization, §10.3 (Gauss–Newton);
      Golub & Van Loan (2013), Matrix Computations, 4th ed., §5.5 (the
      minimum-norm solution of a rank-deficient problem via the SVD);
      Schraudolph (2002), "Fast curvature matrix-vector products for second-order
      gradient descent" (the GGN).
    """
    fn_name = "scale_by_gauss_newton"
    check_choice(fn_name, "solver", solver, SOLVERS)
    check_positive(fn_name, "damping", damping, allow_zero=True)
    check_max_cg_steps(fn_name, max_cg_steps)
    if cg_rtol is not None:
        check_positive(fn_name, "cg_rtol", cg_rtol)

    def init_fn(params: PyTree) -> ScaleByGaussNewtonState:
        del params
        return ScaleByGaussNewtonState(info=_gauss_newton_info())

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        del state, value, grad
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        op, _ = structured_operator(fn_name, value_fn, params, extra)
        dtype = tree_dtype(params)
        lam = jnp.asarray(damping, dtype)
        info = _gauss_newton_info()
        if solver == "dense":
            g_flat, unravel = tree_ravel(updates)
            model_fn = value_fn.bind(**bound_kwargs(value_fn, extra))[0]
            curv = _dense_curvature(op, params, value_fn.identity_loss_hessian, model_fn)
            x, _, dropped = _damped_dense_solve(curv, g_flat.astype(dtype), lam, None)
            direction = unravel(x.astype(g_flat.dtype))
            info = info._replace(rank_deficient=dropped)
        else:
            matvec = lambda v: tree_axpy(lam, v, op.matvec(v))  # noqa: E731
            result = linalg.cg(matvec, updates, rtol=cg_rtol, max_steps=max_cg_steps)
            # G is PSD: CG only stops at once on g ⟂ range(G) (a zero-curvature first
            # direction); fall back to the gradient there, as truncated Newton does.
            nothing = (result.num_steps == 0) | ~_all_finite(tree_ravel(result.x)[0])
            direction = tree_where(nothing, updates, result.x)
            info = info._replace(
                cg_steps=result.num_steps.astype(jnp.int32),
                cg_status=result.status.astype(jnp.int32),
            )
        return direction, ScaleByGaussNewtonState(info=info)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gauss_newton(
    learning_rate: float | jax.Array = 1.0,
    damping: float | jax.Array = 0.0,
    *,
    solver: str = "dense",
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
    linesearch: optax.GradientTransformationExtraArgs | None | str = None,
    max_linesearch_steps: int = 30,
) -> optax.GradientTransformationExtraArgs:
    """Gauss–Newton method: ``θ⁺ = θ − η (G + λI)⁺ ∇f(θ)``.

    With ``f = ½‖r‖²`` and ``G = JᵀJ`` this is the step that minimizes the
    linearized residual ``½‖r + J p‖²`` (Nocedal & Wright 2006, eq. 10.23); with
    ``f = ℓ(m(θ))`` it minimizes the generalized Gauss–Newton model. There is no
    acceptance test: the step length is the fixed ``learning_rate`` ``η``, or comes
    from an optax line search started at ``learning_rate`` (``linesearch=
    "backtracking"`` gives the globally convergent line-search Gauss–Newton method
    of N&W §10.3 when ``J`` has full rank). For an adaptive damping that tests
    every step use :func:`levenberg_marquardt`.

    Args:
      learning_rate: step length ``η`` (the initial step of a line search).
      damping: fixed ``λ ≥ 0`` added to ``G``.
      solver: ``"dense"`` or ``"cg"``, see :func:`scale_by_gauss_newton`.
      max_cg_steps: CG iteration cap for ``solver="cg"``.
      cg_rtol: CG tolerance for ``solver="cg"``.
      linesearch: ``None`` (default: fixed step ``learning_rate``),
        ``"backtracking"`` (Armijo), ``"zoom"`` (strong Wolfe) or any optax
        line-search transform; a named one fills in ``value=``/``grad=`` when the
        caller leaves them out.
      max_linesearch_steps: backtracking/zoom iteration cap.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs a
      structured ``value_fn=``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import newtonjax as nj
      >>> a = jnp.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
      >>> y = jnp.array([1.0, 3.0, 5.0])
      >>> loss = nj.least_squares_objective(lambda w: a @ w - y)
      >>> opt = nj.gauss_newton()
      >>> w = jnp.zeros(2)
      >>> state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      >>> print(jnp.round(optax.apply_updates(w, updates), 4))
      [1. 2.]

    References:
      Nocedal & Wright (2006), Numerical Optimization, §10.3; Schraudolph (2002).
    """
    direction = scale_by_gauss_newton(
        damping, solver=solver, max_cg_steps=max_cg_steps, cg_rtol=cg_rtol
    )
    return chain_with_linesearch(
        "gauss_newton", direction, learning_rate, linesearch, max_linesearch_steps
    )


# -------------------------------------------------------------- Levenberg–Marquardt

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


def _lm_info(dtype) -> LevenbergMarquardtInfo:
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
    )


def nielsen_update(damping, growth, rho, accepted):
    """Nielsen (1999): ``μ ← μ·max(⅓, 1 − (2ρ − 1)³), ν ← 2`` or ``μ ← μν, ν ← 2ν``."""
    rho_ok = jnp.where(accepted, rho, 0.5)
    factor = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho_ok - 1.0) ** 3)
    new_damping = jnp.where(accepted, damping * factor, damping * growth)
    # ν doubles at every consecutive rejection; capped so it never overflows.
    new_growth = jnp.where(accepted, 2.0, jnp.minimum(2.0 * growth, 2.0**30))
    return new_damping, new_growth


def secular_damping(
    values: jax.Array,
    coefficients: jax.Array,
    radius: jax.Array,
    *,
    rtol: float = 0.1,
    max_steps: int = 50,
) -> jax.Array:
    """Levenberg–Marquardt parameter ``μ ≥ 0`` whose step has length ``radius``.

    With the scaled curvature ``Ĝ = V diag(λ) Vᵀ`` and the scaled gradient's
    coordinates ``c = Vᵀ D^{-1/2} g``, the damped step has the scaled length
    ``φ(μ) = ‖c / (λ + μ)‖``, decreasing in ``μ``. Returns ``μ = 0`` when the
    (pseudo-inverse) Gauss–Newton step already satisfies ``φ(0) ≤ (1 + rtol) Δ``;
    otherwise Newton's method on ``1/φ(μ) = 1/Δ`` (Hebden 1973; Moré 1978, §5),
    started at the lower bound ``max(0, ‖c‖/Δ − λ_max)``. ``1/φ`` is concave, so the
    iterates increase monotonically to the root from the left and stop once
    ``φ(μ) ≤ (1 + rtol) Δ`` (MINPACK's ``lmpar`` accepts 10%); they stay in
    ``[max(0, ‖c‖/Δ − λ_max), ‖c‖/Δ]``.

    Args:
      values: eigenvalues ``λ ≥ 0`` of ``Ĝ``.
      coefficients: ``c``, the right-hand side in the eigenbasis.
      radius: ``Δ > 0``.
      rtol: relative tolerance on the step length.
      max_steps: Newton iteration cap.

    Returns:
      The damping ``μ`` (scalar).
    """
    tiny = jnp.finfo(values.dtype).tiny
    radius = jnp.maximum(radius, tiny)

    def length_and_slope(mu):
        shifted = values + mu
        keep = shifted > 0
        safe = jnp.where(keep, shifted, 1.0)
        q = jnp.where(keep, coefficients / safe, 0.0)
        # φ(μ) and -½ dφ²/dμ = Σ c²/(λ + μ)³.
        return jnp.linalg.norm(q), jnp.sum(jnp.where(keep, q * q / safe, 0.0))

    target = (1.0 + rtol) * radius
    hi = jnp.linalg.norm(coefficients) / radius
    lo = jnp.maximum(hi - jnp.max(values), 0.0)
    length0, _ = length_and_slope(jnp.zeros((), values.dtype))
    mu0 = jnp.where(length0 <= target, 0.0, lo)

    def cond(carry):
        _, length, _, k = carry
        return (k < max_steps) & (length > target)

    def body(carry):
        mu, length, slope, k = carry
        # Newton on 1/φ(μ) − 1/Δ: μ ← μ + (φ/Δ − 1) φ² / (Σ c²/(λ+μ)³).
        step = (length / radius - 1.0) * length * (length / jnp.maximum(slope, tiny))
        new = jnp.where(jnp.isfinite(step), mu + step, hi)
        new = jnp.clip(new, lo, hi)
        # Rounding must not stall the (monotone) iteration.
        new = jnp.where(new > mu, new, 0.5 * (mu + hi))
        length, slope = length_and_slope(new)
        return new, length, slope, k + 1

    start = (mu0, *length_and_slope(mu0), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, start)[0]


def trust_region_radius_update(
    radius: jax.Array,
    step_length: jax.Array,
    damping: jax.Array,
    rho: jax.Array,
    predicted_reduction: jax.Array,
    actual_reduction: jax.Array,
    value: jax.Array,
    new_value: jax.Array,
) -> jax.Array:
    """MINPACK's radius update after a step of scaled length ``‖D^{1/2}p‖`` (Moré 1978).

    ``ρ ≤ ¼``: ``Δ ← t · min(Δ, 10 ‖D^{1/2}p‖)`` with ``t = ½`` if ``f`` did not
    increase, else the minimizer ``t = ½ d / (d + Δf)`` of the quadratic through
    ``f(θ)``, the directional derivative ``d = −(pᵀGp + μ‖D^{1/2}p‖²)`` and ``f(θ + p)``,
    kept in ``[0.1, 0.5]`` (``t = 0.1`` if ``f`` grew a hundredfold or is not
    finite). ``ρ ≥ ¾`` or an undamped (Gauss–Newton) step with ``ρ > ¼``:
    ``Δ ← 2‖D^{1/2}p‖``. Otherwise ``Δ`` is kept.

    Args:
      radius: current ``Δ``.
      step_length: ``‖D^{1/2}p‖`` of the damped step.
      damping: the ``μ`` the step was solved with.
      rho: gain ratio.
      predicted_reduction: ``½ pᵀGp + μ‖D^{1/2}p‖²``.
      actual_reduction: ``f(θ) − f(θ + step)`` (``-inf`` if not finite).
      value: ``f(θ)``.
      new_value: ``f(θ + step)``.

    Returns:
      The new radius.
    """
    # d = −(pᵀGp + μ‖D^{1/2}p‖²) = −(2·pred − μ‖D^{1/2}p‖²).
    slope = -(2.0 * predicted_reduction - damping * step_length**2)
    denom = slope + jnp.where(jnp.isfinite(actual_reduction), actual_reduction, -jnp.inf)
    interp = 0.5 * slope / jnp.where(denom < 0, denom, -1.0)
    interp = jnp.where(denom < 0, interp, 0.1)
    t = jnp.where(actual_reduction >= 0, 0.5, interp)
    blowup = ~jnp.isfinite(new_value) | (new_value >= 100.0 * value)
    t = jnp.where(blowup | ~jnp.isfinite(t) | (t < 0.1), 0.1, jnp.minimum(t, 0.5))
    shrunk = t * jnp.minimum(radius, 10.0 * step_length)
    grown = 2.0 * step_length
    keep_or_grow = jnp.where((rho >= 0.75) | (damping == 0), grown, radius)
    return jnp.where(rho <= 0.25, shrunk, keep_or_grow)


def _marquardt_floor(running_max: jax.Array) -> jax.Array:
    """``D = max(running max of diag(G), eps·max D)`` (1 if ``G`` has been 0 so far)."""
    top = jnp.max(running_max)
    floor = jnp.where(top > 0, jnp.finfo(running_max.dtype).eps * top, 1.0)
    return jnp.maximum(running_max, floor)


def _second_directional_derivative(value_fn, params: PyTree, tangent: PyTree, kwargs) -> PyTree:
    """``m_vv = d²/dt² m(θ + t v)`` at ``t = 0`` by nested forward mode."""
    model_fn, _ = value_fn.bind(**kwargs)

    def first(p):
        return jax.jvp(model_fn, (p,), (tangent,))[1]

    return jax.jvp(first, (params,), (tangent,))[1]


def _acceleration_rhs(value_fn, op: GGNOperator, m_vv: PyTree, kwargs) -> PyTree:
    """``Jᵀ ∇²ℓ m_vv`` (``Jᵀ r_vv`` for least squares)."""
    if value_fn.identity_loss_hessian:
        return op.vjp(m_vv)
    _, loss_fn = value_fn.bind(**kwargs)
    h = jax.jvp(jax.grad(loss_fn), (op.outputs,), (m_vv,))[1]
    return op.vjp(h)


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
    check_positive(fn_name, "eta", eta, allow_zero=True)
    if isinstance(eta, float) and eta >= 1.0:
        raise ValueError(f"{fn_name}: eta must be in [0, 1), got {eta}")
    check_max_cg_steps(fn_name, max_cg_steps)
    if cg_rtol is not None:
        check_positive(fn_name, "cg_rtol", cg_rtol)
    trust_region = damping_update == "trust_region"

    def init_fn(params: PyTree) -> ScaleByLevenbergMarquardtState:
        dtype = tree_dtype(params)
        fill = jnp.zeros_like if scaling == "marquardt" else jnp.ones_like
        return ScaleByLevenbergMarquardtState(
            damping=jnp.asarray(initial_damping, dtype),
            damping_growth=jnp.asarray(2.0, dtype),
            radius=jnp.zeros((), dtype),
            scaling_diagonal=jax.tree.map(fill, params),
            num_updates=jnp.zeros((), jnp.int32),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            info=_lm_info(dtype),
        )

    def _nielsen_start(state, ratio_diag, first, dtype, lo, hi):
        """Nielsen's ``μ`` for this step (``τ · max diag(Ĝ)`` at the first update)."""
        mu = state.damping.astype(dtype)
        if relative_initial_damping and ratio_diag is not None:
            ratio = jnp.max(ratio_diag)
            ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
            mu = jnp.where(first, mu * ratio, mu)
        return jnp.clip(mu, lo, hi)

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        op, fn = structured_operator(fn_name, value_fn, params, extra)
        kwargs = bound_kwargs(value_fn, extra)
        least_squares = value_fn.identity_loss_hessian
        dtype = tree_dtype(params)
        f0 = op.value if value is None else value
        f0 = jnp.asarray(f0, dtype)
        g_flat, unravel_g = tree_ravel(updates)
        flat_params, unravel = tree_ravel(params)
        g_flat = g_flat.astype(dtype)
        first = state.num_updates == 0

        curv = None
        if solver == "dense":
            curv = _dense_curvature(op, params, least_squares, value_fn.bind(**kwargs)[0])
            diag_g = curv.diagonal
        elif scaling == "marquardt":
            diag_g = ggn_diagonal(op, params, least_squares)
        elif relative_initial_damping and not trust_region:
            # Only the first update needs diag(G) here (cond: not evaluated later).
            diag_g = jax.lax.cond(
                first,
                lambda: ggn_diagonal(op, params, least_squares),
                lambda: jnp.zeros_like(g_flat),
            )
        else:
            diag_g = None
        if diag_g is not None:
            diag_g = jnp.where(jnp.isfinite(diag_g), diag_g, 0.0)

        running = tree_ravel(state.scaling_diagonal)[0].astype(dtype)
        if scaling == "marquardt":
            running = jnp.maximum(running, diag_g)
            scale_d = _marquardt_floor(running)
        else:
            scale_d = jnp.ones_like(g_flat)
        inv_sqrt_d = None if scaling == "identity" else 1.0 / jnp.sqrt(scale_d)

        lo, hi = damping_bounds(dtype)
        radius = state.radius.astype(dtype)
        cg_steps = jnp.zeros((), jnp.int32)
        cg_status = jnp.zeros((), jnp.int32)
        if solver == "dense":
            spec = _scaled_spectrum(curv, inv_sqrt_d)
            coef_g = _in_basis(spec, g_flat, inv_sqrt_d)
            if trust_region:
                size = jnp.linalg.norm(jnp.sqrt(scale_d) * flat_params.astype(dtype))
                factor = jnp.asarray(initial_radius_factor, dtype)
                radius0 = jnp.where(size > 0, factor * size, factor)
                radius = jnp.clip(jnp.where(first, radius0, radius), lo, hi)
                mu = secular_damping(spec.values, coef_g, radius)
            else:
                mu = _nielsen_start(state, diag_g / scale_d, first, dtype, lo, hi)
            inv = _shifted_inverse(spec.values, mu)
            coef_p = inv * coef_g
            x = _from_basis(spec, coef_p, inv_sqrt_d)
            curvature = _curvature_along(curv, x)
            scaled_length = jnp.linalg.norm(coef_p)
            # m(0) − m(p) = ½ pᵀGp + μ‖D^{1/2}p‖² for (G + μD)p = −g: no cancellation.
            predicted = 0.5 * curvature + mu * scaled_length**2
            step = unravel_g(x)
        else:
            mu = _nielsen_start(
                state, None if diag_g is None else diag_g / scale_d, first, dtype, lo, hi
            )
            d_tree = unravel(mu * scale_d)
            matvec = lambda v: jax.tree.map(  # noqa: E731
                lambda gv, dv, vv: gv + (dv * vv).astype(gv.dtype), op.matvec(v), d_tree, v
            )
            result = linalg.cg(matvec, updates, rtol=cg_rtol, max_steps=max_cg_steps)
            step = result.x
            predicted = tree_vdot(updates, step) - 0.5 * tree_vdot(step, op.matvec(step))
            scaled_length = jnp.sqrt(jnp.sum(scale_d * tree_ravel(step)[0].astype(dtype) ** 2))
            cg_steps = result.num_steps.astype(jnp.int32)
            cg_status = result.status.astype(jnp.int32)
            curvature = None

        ratio = jnp.zeros((), dtype)
        accelerated = jnp.zeros((), bool)
        if geodesic:
            # The model's second derivative along the velocity; its sign is that of
            # the tangent squared, so the gradient-sign ``step`` serves as well.
            m_vv = _second_directional_derivative(value_fn, params, step, kwargs)
            if curv is not None and curv.jacobian is not None:
                m_vv_flat = tree_ravel(m_vv)[0].astype(dtype)
                rhs = jnp.matmul(curv.jacobian.T, m_vv_flat, precision=_HIGHEST)
            else:
                rhs = tree_ravel(_acceleration_rhs(value_fn, op, m_vv, kwargs))[0].astype(dtype)
            if solver == "dense":
                coef_w = inv * _in_basis(spec, rhs, inv_sqrt_d)
                w_flat = _from_basis(spec, coef_w, inv_sqrt_d)
                w_length = jnp.linalg.norm(coef_w)
            else:
                w_res = linalg.cg(matvec, unravel_g(rhs), rtol=cg_rtol, max_steps=max_cg_steps)
                w_flat = tree_ravel(w_res.x)[0].astype(dtype)
                w_length = jnp.sqrt(jnp.sum(scale_d * w_flat**2))
                cg_steps = cg_steps + w_res.num_steps.astype(jnp.int32)
            ratio = 2.0 * w_length / jnp.maximum(scaled_length, jnp.finfo(dtype).tiny)
            accelerated = (
                jnp.isfinite(ratio)
                & (ratio <= jnp.asarray(acceleration_ratio, dtype))
                & _all_finite(w_flat)
                & (scaled_length > 0)
            )
            # Move = −step − ½w (a = −w), so the gradient-sign output is step + ½w.
            total = tree_ravel(step)[0].astype(dtype) + 0.5 * w_flat
            step = tree_where(accelerated, unravel_g(total), step)
            ratio = jnp.where(jnp.isfinite(ratio), ratio, jnp.finfo(dtype).max)

        # f and ∇f at the trial point in one pass: the next point's, if accepted.
        new_value, new_grad = jax.value_and_grad(fn)(tree_sub(params, step))
        rho, accepted, actual = acceptance(f0, new_value, predicted.astype(dtype), eta)
        # Both reductions at the rounding level of f: ρ is noise, trust the model
        # (ρ = 1; Conn, Gould & Toint 2000, §17.4.2), so the last Gauss–Newton steps of
        # a tight solve are not rejected for rounding errors in f.
        noise = 10.0 * jnp.finfo(dtype).eps * jnp.abs(f0)
        moves = jnp.any(tree_ravel(tree_sub(params, step))[0] != flat_params)
        rounding = (
            jnp.isfinite(new_value)
            & (predicted > 0)
            & (predicted <= noise)
            & (jnp.abs(actual) <= noise)
            & moves
        )
        rho = jnp.where(rounding, 1.0, rho)
        accepted = accepted | rounding
        if trust_region:
            radius = jnp.where(first, jnp.minimum(radius, scaled_length), radius)
            new_radius = trust_region_radius_update(
                radius,
                scaled_length,
                mu,
                rho,
                predicted.astype(dtype),
                actual,
                f0,
                new_value.astype(dtype),
            )
            new_mu, new_nu = mu, state.damping_growth.astype(dtype)
        else:
            new_radius = scaled_length
            new_mu, new_nu = nielsen_update(mu, state.damping_growth.astype(dtype), rho, accepted)
        u = tree_where(accepted, step, tree_zeros_like(step))
        info = LevenbergMarquardtInfo(
            rho=rho.astype(dtype),
            predicted_reduction=predicted.astype(dtype),
            actual_reduction=actual.astype(dtype),
            step_norm=tree_norm(step).astype(dtype),
            rejected=~accepted,
            acceleration_ratio=ratio.astype(dtype),
            accelerated=accelerated,
            cg_steps=cg_steps,
            cg_status=cg_status,
        )
        new_state = ScaleByLevenbergMarquardtState(
            damping=jnp.clip(new_mu, 0.0 if trust_region else lo, hi).astype(dtype),
            damping_growth=new_nu.astype(dtype),
            radius=jnp.clip(new_radius, lo, hi).astype(dtype),
            scaling_diagonal=unravel(running),
            num_updates=state.num_updates + 1,
            value=jnp.where(accepted, new_value, f0).astype(dtype),
            grad=tree_where(accepted, new_grad, op.grad if grad is None else grad),
            info=info,
        )
        return u, new_state

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
