"""Gauss–Newton and Levenberg–Marquardt as optax transforms.

Descent × search, in optimistix's terms:

* :func:`gauss_newton` — the descent is the Gauss–Newton direction
  ``(G + damping·I) u = g``, the search optax's backtracking line search started at
  step 1 (the line-search Gauss–Newton method of Nocedal & Wright 2006, §10.3), or a
  fixed learning rate.
* :func:`levenberg_marquardt` — the descent is the damped Gauss–Newton step
  ``(G + μD) p = −g``, the search the classical Levenberg–Marquardt damping update
  from the gain ratio ``ρ`` (Nielsen 1999): a trust region whose radius is set
  implicitly through ``μ`` (Moré 1978; N&W §10.3).

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

dropping the directions with ``s² + μ ≤ (rcond · s_max)²``, so an undamped
Gauss–Newton step on a rank-deficient problem is the minimum-norm least-squares
step, exactly as ``lstsq``. (The right-hand side is the incoming gradient, as
every optax block assumes, so a clipped or otherwise transformed gradient is
honored.) A composite objective's ``G`` is materialized (``n`` GGN products) and
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
    check_choice,
    check_positive,
    trial_value,
    with_value_and_grad,
)
from newtonjax._tree import (
    PyTree,
    tree_axpy,
    tree_dtype,
    tree_norm,
    tree_ravel,
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


def _dense_curvature(op: GGNOperator, params: PyTree, least_squares: bool) -> _DenseCurvature:
    flat, unravel = tree_ravel(params)
    n = flat.shape[0]
    eye = jnp.eye(n, dtype=flat.dtype)
    if least_squares:
        # Column i is J e_i: n replays of the linearized residual (forward mode).
        jac = jax.vmap(lambda e: tree_ravel(op.jvp(unravel(e)))[0], out_axes=1)(eye)
        jac = jac.astype(flat.dtype)
        jac = jnp.where(_all_finite(jac), jac, jnp.zeros_like(jac))
        return _DenseCurvature(jac, None, jnp.sum(jac * jac, axis=0))
    mat = op.as_matrix().astype(flat.dtype)
    mat = jnp.where(_all_finite(mat), 0.5 * (mat + mat.T), jnp.zeros_like(mat))
    return _DenseCurvature(None, mat, jnp.diagonal(mat))


def _damped_dense_solve(
    curv: _DenseCurvature, b: jax.Array, damping: jax.Array, inv_sqrt_d: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x = (G + damping·D)⁺ b`` via the spectrum of ``Ĝ = D^{-1/2} G D^{-1/2}``.

    Returns:
      ``(x, xᵀ G x, dropped)`` where ``dropped`` says whether directions of
      (numerically) zero damped curvature were left out (pseudo-inverse).
    """
    dtype = b.dtype
    eps = jnp.finfo(dtype).eps
    if curv.jacobian is not None:
        jac = curv.jacobian if inv_sqrt_d is None else curv.jacobian * inv_sqrt_d[None, :]
        m, n = jac.shape
        # Thin SVD; for a wide Jacobian (m < n) the full V spans the null space too.
        _, s, vh = jnp.linalg.svd(jac, full_matrices=m < n)
        lam = jnp.zeros((n,), dtype).at[: s.shape[0]].set(s * s)
        vecs = vh.T
        s_max = s[0] if s.shape[0] else jnp.zeros((), dtype)
        cutoff = (eps * max(m, n) * s_max) ** 2
    else:
        n = curv.matrix.shape[0]
        mat = curv.matrix
        if inv_sqrt_d is not None:
            mat = mat * jnp.outer(inv_sqrt_d, inv_sqrt_d)
        lam, vecs = jnp.linalg.eigh(mat)
        # The GGN of a convex output loss is PSD: negative eigenvalues are rounding.
        lam = jnp.maximum(lam, 0.0)
        cutoff = n * eps * jnp.max(lam)
    shifted = lam + damping
    keep = shifted > cutoff
    inv = jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0)
    b_hat = b if inv_sqrt_d is None else b * inv_sqrt_d
    x = jnp.matmul(vecs, inv * jnp.matmul(vecs.T, b_hat, precision=_HIGHEST), precision=_HIGHEST)
    if inv_sqrt_d is not None:
        x = x * inv_sqrt_d
    finite = _all_finite(x)
    x = jnp.where(finite, x, jnp.zeros_like(x))
    if curv.jacobian is not None:
        jx = jnp.matmul(curv.jacobian, x, precision=_HIGHEST)
        curvature = jnp.vdot(jx, jx)
    else:
        curvature = jnp.vdot(x, jnp.matmul(curv.matrix, x, precision=_HIGHEST))
    return x, curvature, jnp.any(~keep)


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
            curv = _dense_curvature(op, params, value_fn.identity_loss_hessian)
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
    if isinstance(linesearch, str):
        check_choice("gauss_newton", "linesearch", linesearch, ("backtracking", "zoom"))
        if linesearch == "backtracking":
            linesearch = optax.scale_by_backtracking_linesearch(
                max_backtracking_steps=max_linesearch_steps,
                decrease_factor=0.5,
                increase_factor=jnp.inf,
                max_learning_rate=1.0,
            )
        else:
            linesearch = optax.scale_by_zoom_linesearch(
                max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"
            )
    blocks = [
        scale_by_gauss_newton(damping, solver=solver, max_cg_steps=max_cg_steps, cg_rtol=cg_rtol),
        optax.scale_by_learning_rate(learning_rate),
    ]
    if linesearch is None:
        return optax.chain(*blocks)
    blocks.append(linesearch)
    return with_value_and_grad("gauss_newton", optax.chain(*blocks))


# -------------------------------------------------------------- Levenberg–Marquardt


class LevenbergMarquardtInfo(NamedTuple):
    """Diagnostics of the last Levenberg–Marquardt step (all scalars).

    The damping the step was solved with is the previous state's ``damping``.

    Attributes:
      rho: gain ratio actual / predicted reduction (``-inf`` for a non-finite trial).
      predicted_reduction: ``m(0) − m(p) = −gᵀp − ½ pᵀGp``.
      actual_reduction: ``f(θ) − f(θ + p)``.
      step_norm: ``‖p‖``.
      rejected: whether the step was rejected (the update is zero).
      cg_steps: CG iterations (``solver="cg"``), else 0.
      cg_status: :class:`newtonjax.linalg.SolverStatus` code of CG, else 0.
    """

    rho: jax.Array
    predicted_reduction: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    rejected: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class ScaleByLevenbergMarquardtState(NamedTuple):
    """State of :func:`scale_by_levenberg_marquardt`.

    Attributes:
      damping: ``μ`` for the next step (scalar; with ``relative_initial_damping``
        the factor ``τ`` until the first update).
      damping_growth: Nielsen's ``ν``, the factor applied to ``μ`` at the next
        rejection (scalar, 2 after an accepted step).
      scaling_diagonal: the running maximum of ``diag(G)`` (``scaling="marquardt"``;
        ones for ``"identity"``), a pytree like ``params``.
      num_updates: int32, updates so far (rejected ones included).
      info: diagnostics of the last step.
    """

    damping: jax.Array
    damping_growth: jax.Array
    scaling_diagonal: PyTree
    num_updates: jax.Array
    info: LevenbergMarquardtInfo


def _lm_info(dtype) -> LevenbergMarquardtInfo:
    zero = jnp.zeros((), dtype)
    return LevenbergMarquardtInfo(
        rho=zero,
        predicted_reduction=zero,
        actual_reduction=zero,
        step_norm=zero,
        rejected=jnp.zeros((), bool),
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


def _marquardt_floor(running_max: jax.Array) -> jax.Array:
    """``D = max(running max of diag(G), eps·max D)`` (1 if ``G`` has been 0 so far)."""
    top = jnp.max(running_max)
    floor = jnp.where(top > 0, jnp.finfo(running_max.dtype).eps * top, 1.0)
    return jnp.maximum(running_max, floor)


def scale_by_levenberg_marquardt(
    initial_damping: float | jax.Array = 1e-3,
    *,
    relative_initial_damping: bool = True,
    scaling: str = "identity",
    solver: str = "dense",
    eta: float | jax.Array = 0.0,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Levenberg–Marquardt step, tested at ``params − u`` before it is returned.

    Solves ``(G + μD) p = −g`` with ``G`` the (generalized) Gauss–Newton matrix of
    the structured ``value_fn`` and ``g`` the incoming updates, and computes the
    gain ratio ``ρ = (f(θ) − f(θ + p)) / (−gᵀp − ½pᵀGp)``. The step is accepted iff
    ``ρ > eta`` (a non-finite trial value rejects it); then ``μ`` follows
    Nielsen (1999):

        accepted:  μ ← μ · max(⅓, 1 − (2ρ − 1)³),   ν ← 2
        rejected:  μ ← μ · ν,                        ν ← 2ν

    with ``μ`` kept in ``[sqrt(tiny), sqrt(max)]`` of the dtype. The output ``u = −p``
    (gradient sign) for an accepted step and zeros for a rejected one, so the alias
    uses learning rate 1; rescaling ``u`` or a line search after this block changes
    a step that was already tested.

    Args:
      initial_damping: ``μ₀``, or ``τ`` with ``relative_initial_damping``.
      relative_initial_damping: take ``μ₀ = τ · max_i G_ii / D_ii`` at the first
        update (Madsen, Nielsen & Tingleff 2004, §3.2: ``τ = 1e-3`` for a rough
        start, ``1e-6`` for a good one); otherwise ``μ₀ = initial_damping``.
      scaling: ``"identity"`` (``D = I``, Levenberg) or ``"marquardt"``
        (``D = diag(G)``, kept as the running maximum over the iterations and
        floored at ``eps·max D``, as MINPACK's ``lmder`` does; invariant to a
        rescaling of the parameters).
      solver: ``"dense"`` (SVD of the scaled Jacobian for least squares, ``eigh``
        of the scaled GGN otherwise) or ``"cg"`` (matrix-free; with
        ``scaling="marquardt"`` the exact ``diag(G)`` costs ``n`` extra products per
        step).
      eta: acceptance threshold on ``ρ`` (Nielsen: 0).
      max_cg_steps: CG iteration cap (``solver="cg"``), default ``10 n``.
      cg_rtol: CG relative residual tolerance, default ``sqrt(eps)``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs a
      structured ``value_fn=`` (and accepts ``value=``, ``f(θ)``).

    References:
      Levenberg (1944); Marquardt (1963); Moré (1978), "The Levenberg–Marquardt
      algorithm: implementation and theory" (scaling ``D``); Nielsen (1999),
      "Damping parameter in Marquardt's method", IMM-REP-1999-05;
      Madsen, Nielsen & Tingleff (2004), "Methods for non-linear least squares
      problems", §3.2, Alg. 3.16; Nocedal & Wright (2006), §10.3.
    """
    fn_name = "scale_by_levenberg_marquardt"
    check_choice(fn_name, "scaling", scaling, SCALINGS)
    check_choice(fn_name, "solver", solver, SOLVERS)
    check_positive(fn_name, "initial_damping", initial_damping)
    check_positive(fn_name, "eta", eta, allow_zero=True)
    if isinstance(eta, float) and eta >= 1.0:
        raise ValueError(f"{fn_name}: eta must be in [0, 1), got {eta}")
    check_max_cg_steps(fn_name, max_cg_steps)
    if cg_rtol is not None:
        check_positive(fn_name, "cg_rtol", cg_rtol)

    def init_fn(params: PyTree) -> ScaleByLevenbergMarquardtState:
        dtype = tree_dtype(params)
        fill = jnp.zeros_like if scaling == "marquardt" else jnp.ones_like
        return ScaleByLevenbergMarquardtState(
            damping=jnp.asarray(initial_damping, dtype),
            damping_growth=jnp.asarray(2.0, dtype),
            scaling_diagonal=jax.tree.map(fill, params),
            num_updates=jnp.zeros((), jnp.int32),
            info=_lm_info(dtype),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        del grad
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        op, fn = structured_operator(fn_name, value_fn, params, extra)
        least_squares = value_fn.identity_loss_hessian
        dtype = tree_dtype(params)
        f0 = op.value if value is None else value
        f0 = jnp.asarray(f0, dtype)
        g_flat, unravel_g = tree_ravel(updates)
        _, unravel = tree_ravel(params)
        g_flat = g_flat.astype(dtype)
        first = state.num_updates == 0

        curv = None
        if solver == "dense":
            curv = _dense_curvature(op, params, least_squares)
            diag_g = curv.diagonal
        elif scaling == "marquardt":
            diag_g = ggn_diagonal(op, params, least_squares)
        elif relative_initial_damping:
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

        lo, hi = damping_bounds(dtype)
        mu = state.damping.astype(dtype)
        if relative_initial_damping:
            ratio = jnp.max(diag_g / scale_d)
            ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
            mu = jnp.where(first, mu * ratio, mu)
        mu = jnp.clip(mu, lo, hi)

        cg_steps = jnp.zeros((), jnp.int32)
        cg_status = jnp.zeros((), jnp.int32)
        if solver == "dense":
            inv_sqrt_d = None if scaling == "identity" else 1.0 / jnp.sqrt(scale_d)
            x, curvature, _ = _damped_dense_solve(curv, g_flat, mu, inv_sqrt_d)
            step = unravel_g(x)
            predicted = jnp.vdot(g_flat, x) - 0.5 * curvature
        else:
            d_tree = unravel(mu * scale_d)
            matvec = lambda v: jax.tree.map(  # noqa: E731
                lambda gv, dv, vv: gv + (dv * vv).astype(gv.dtype), op.matvec(v), d_tree, v
            )
            result = linalg.cg(matvec, updates, rtol=cg_rtol, max_steps=max_cg_steps)
            step = result.x
            predicted = tree_vdot(updates, step) - 0.5 * tree_vdot(step, op.matvec(step))
            cg_steps = result.num_steps.astype(jnp.int32)
            cg_status = result.status.astype(jnp.int32)

        new_value = trial_value(fn, params, step)
        rho, accepted, actual = acceptance(f0, new_value, predicted.astype(dtype), eta)
        new_mu, new_nu = nielsen_update(mu, state.damping_growth.astype(dtype), rho, accepted)
        u = tree_where(accepted, step, tree_zeros_like(step))
        info = LevenbergMarquardtInfo(
            rho=rho.astype(dtype),
            predicted_reduction=predicted.astype(dtype),
            actual_reduction=actual.astype(dtype),
            step_norm=tree_norm(step).astype(dtype),
            rejected=~accepted,
            cg_steps=cg_steps,
            cg_status=cg_status,
        )
        new_state = ScaleByLevenbergMarquardtState(
            damping=jnp.clip(new_mu, lo, hi).astype(dtype),
            damping_growth=new_nu.astype(dtype),
            scaling_diagonal=unravel(running),
            num_updates=state.num_updates + 1,
            info=info,
        )
        return u, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def levenberg_marquardt(
    initial_damping: float | jax.Array = 1e-3,
    *,
    relative_initial_damping: bool = True,
    scaling: str = "identity",
    solver: str = "dense",
    eta: float | jax.Array = 0.0,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Levenberg–Marquardt method with Nielsen's damping update.

    Each step solves ``(G + μD) p = −∇f(θ)`` with ``G`` the Gauss–Newton matrix
    ``JᵀJ`` (or the generalized ``Jᵀ∇²ℓJ``), takes it iff the gain ratio
    ``ρ = (f(θ) − f(θ + p)) / (m(0) − m(p))`` is positive, and adapts ``μ`` from
    ``ρ`` (see :func:`scale_by_levenberg_marquardt`). Large ``μ`` gives a short
    gradient step, small ``μ`` the Gauss–Newton step, so convergence is fast near
    a zero-residual solution and global elsewhere (a trust-region method in
    disguise, Moré 1978).

    The step is tested inside the block, so the learning rate is fixed at 1:
    ``optax.apply_updates`` never increases the loss. Rescaling the updates after
    this block, or a line search, changes a step that was already tested.

    Args:
      initial_damping: ``μ₀``, or the relative factor ``τ`` (default ``1e-3``).
      relative_initial_damping: ``μ₀ = τ · max_i G_ii / D_ii`` (default True).
      scaling: ``"identity"`` or ``"marquardt"`` (``D = diag(G)``, running max).
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
      Nielsen (1999); Madsen, Nielsen & Tingleff (2004), §3.2; Moré (1978);
      Nocedal & Wright (2006), Numerical Optimization, §10.3.
    """
    return optax.chain(
        scale_by_levenberg_marquardt(
            initial_damping,
            relative_initial_damping=relative_initial_damping,
            scaling=scaling,
            solver=solver,
            eta=eta,
            max_cg_steps=max_cg_steps,
            cg_rtol=cg_rtol,
        ),
        optax.scale(-1.0),
    )
