"""The Gauss–Newton matrix of a structured objective, as the update rules read it.

``G`` is ``JᵀJ`` for a :func:`~newtonjax.least_squares_objective` and the generalized
Gauss–Newton matrix ``Jᵀ∇²ℓJ`` of a :func:`~newtonjax.composite_objective`
(Schraudolph 2002). Both are read off the structured ``value_fn``; a plain callable
is an error that names the objectives to build. Here: the matrix-free operator, the
dense form for small ``n`` (the Jacobian itself for least squares, so that its SVD
never squares the condition number), the diagonal, and ``xᵀGx``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax._curvature import GGNOperator, gauss_newton_operator
from newtonjax._objectives import CompositeObjective
from newtonjax._transforms._common import bind_value_fn, bound_kwargs
from newtonjax._tree import HIGHEST, PyTree, tree_all_finite, tree_ravel

__all__ = [
    "structured_operator",
    "DenseCurvature",
    "dense_curvature",
    "curvature_along",
    "ggn_diagonal",
]


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


class DenseCurvature(NamedTuple):
    """``G`` in ravel order: through the Jacobian (least squares) or as a matrix.

    Attributes:
      jacobian: ``(m, n)`` Jacobian of the residual (least squares), else ``None``.
      matrix: ``(n, n)`` symmetric GGN (composite objectives), else ``None``.
      diagonal: ``(n,)`` ``diag(G)``.
    """

    jacobian: jax.Array | None
    matrix: jax.Array | None
    diagonal: jax.Array


def dense_curvature(
    op: GGNOperator, params: PyTree, least_squares: bool, model_fn: Callable | None = None
) -> DenseCurvature:
    """``G`` of ``op`` in dense form (all zeros if a product is not finite)."""
    flat, unravel = tree_ravel(params)
    if least_squares:
        # The m × n Jacobian in one forward-mode pass over the n basis tangents
        # (cheaper under jit than n replays of the linearization, which XLA
        # evaluates with the residual as a second pass over the same data).
        jac = jax.jacfwd(lambda x: tree_ravel(model_fn(unravel(x)))[0])(flat)
        jac = jac.astype(flat.dtype)
        jac = jnp.where(tree_all_finite(jac), jac, jnp.zeros_like(jac))
        return DenseCurvature(jac, None, jnp.sum(jac * jac, axis=0))
    mat = op.as_matrix().astype(flat.dtype)
    mat = jnp.where(tree_all_finite(mat), 0.5 * (mat + mat.T), jnp.zeros_like(mat))
    return DenseCurvature(None, mat, jnp.diagonal(mat))


def curvature_along(curv: DenseCurvature, x: jax.Array) -> jax.Array:
    """``xᵀ G x`` (as ``‖J x‖²`` for least squares)."""
    if curv.jacobian is not None:
        jx = jnp.matmul(curv.jacobian, x, precision=HIGHEST)
        return jnp.vdot(jx, jx)
    return jnp.vdot(x, jnp.matmul(curv.matrix, x, precision=HIGHEST))


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
