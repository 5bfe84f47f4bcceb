"""Gauss–Newton as an optax transform.

Descent × search, in optimistix's terms: the descent is the Gauss–Newton direction
``(G + damping·I) u = g``, the search optax's backtracking line search started at
step 1 (the line-search Gauss–Newton method of Nocedal & Wright 2006, §10.3), or a
fixed learning rate. For the adaptive damping that tests every step see
:mod:`newtonjax._transforms._levenberg_marquardt`, which is built from the same
parts.

``G`` is the Gauss–Newton matrix ``JᵀJ`` of a :func:`~newtonjax.least_squares_objective`
or the generalized Gauss–Newton matrix ``Jᵀ∇²ℓJ`` of a
:func:`~newtonjax.composite_objective` (Schraudolph 2002); both are read off the
structured ``value_fn`` (:mod:`._structured`), so a plain callable is an error.

The dense solver never forms ``JᵀJ`` for a least-squares objective: it builds the
Jacobian from ``n`` forward-mode products and takes its thin SVD ``U S Vᵀ``
(:func:`newtonjax.linalg.damped_spectral_solve`), so the eigenvalues ``s²`` of ``G``
come without squaring the Jacobian's condition number, rank deficiency is detected
with the ``rcond`` of :func:`jax.numpy.linalg.lstsq`, and the step is

    u = V diag(1 / (s² + λ)) Vᵀ g,

where singular values below ``lstsq``'s cutoff ``rcond · s_max`` count as 0: they
are then damped by ``λ``, and dropped only when ``λ = 0``, so an undamped
Gauss–Newton step on a rank-deficient problem is the minimum-norm least-squares
step, exactly as ``lstsq``, while a damped step is the true regularized solution.
(The right-hand side is the incoming gradient, as every optax block assumes, so a
clipped or otherwise transformed gradient is honored.) A composite objective's ``G``
is materialized (``n`` GGN products) and decomposed by ``eigh``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax._checks import check_choice, check_count, check_positive
from newtonjax._transforms._common import bound_kwargs, chain_with_linesearch
from newtonjax._transforms._levenberg_marquardt import (  # also importable from here
    LevenbergMarquardtInfo,
    ScaleByLevenbergMarquardtState,
    levenberg_marquardt,
    scale_by_levenberg_marquardt,
)
from newtonjax._transforms._structured import (
    CGSystem,
    SpectralSystem,
    dense_curvature,
    gradient_parts,
    structured_operator,
)
from newtonjax._tree import PyTree, tree_all_finite, tree_dtype, tree_ravel, tree_where

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
    check_count(fn_name, "max_cg_steps", max_cg_steps)
    check_positive(fn_name, "cg_rtol", cg_rtol)
    cg_options = dict(rtol=cg_rtol, max_steps=max_cg_steps)

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
        g = gradient_parts(updates, dtype)
        info = _gauss_newton_info()
        if solver == "dense":
            model_fn = value_fn.bind(**bound_kwargs(value_fn, extra))[0]
            curv = dense_curvature(op, params, value_fn.identity_loss_hessian, model_fn)
            solve = SpectralSystem.build(curv, g).solve
            x, _ = solve.step(lam)
            direction = g.unravel(x.astype(tree_dtype(updates)))
            info = info._replace(rank_deficient=solve.drops_directions(lam))
        else:
            ones = jnp.ones_like(g.flat)
            result = CGSystem(op, g, ones, tree_ravel(params)[1], cg_options).cg(lam)
            # G is PSD: CG only stops at once on g ⟂ range(G) (a zero-curvature first
            # direction); fall back to the gradient there, as truncated Newton does.
            nothing = (result.num_steps == 0) | ~tree_all_finite(result.x)
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
      An :class:`optax.GradientTransformationExtraArgs` whose ``update`` takes the
      structured objective as ``value_fn=``.

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
