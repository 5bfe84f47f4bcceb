"""The Gauss–Newton matrix of a structured objective, as the update rules read it.

``G`` is ``JᵀJ`` for a :func:`~newtonjax.least_squares_objective` and the generalized
Gauss–Newton matrix ``Jᵀ∇²ℓJ`` of a :func:`~newtonjax.composite_objective`
(Schraudolph 2002). Both are read off the structured ``value_fn``; a plain callable
is an error that names the objectives to build. Here: the matrix-free operator, the
dense form for small ``n`` (the Jacobian itself for least squares, so that its SVD
never squares the condition number), the diagonal, ``xᵀGx``, and the damped system
``(G + μD) x = g`` of Gauss–Newton and Levenberg–Marquardt, solved either through one
spectrum of the dense ``G`` (:class:`SpectralSystem`) or matrix-free by CG
(:class:`CGSystem`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax import linalg
from newtonjax._curvature import GGNOperator, gauss_newton_operator
from newtonjax._objectives import CompositeObjective
from newtonjax._transforms._common import bind_value_fn, bound_kwargs
from newtonjax._tree import (
    HIGHEST,
    PyTree,
    tree_all_finite,
    tree_ravel,
    tree_ravel_real,
    tree_vdot,
)

__all__ = [
    "structured_operator",
    "DenseCurvature",
    "dense_curvature",
    "residual_and_jacobian",
    "finite_or_zeros",
    "jacobian_curvature",
    "curvature_along",
    "ggn_diagonal",
    "Gradient",
    "gradient_parts",
    "Velocity",
    "SpectralSystem",
    "CGSystem",
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
    flat = tree_ravel(params)[0]
    if least_squares:
        return jacobian_curvature(residual_and_jacobian(model_fn, params)[1])
    mat = op.as_matrix().astype(flat.dtype)
    mat = jnp.where(tree_all_finite(mat), 0.5 * (mat + mat.T), jnp.zeros_like(mat))
    return DenseCurvature(None, mat, jnp.diagonal(mat))


#: Up to this many parameters, :func:`residual_and_jacobian` applies the
#: linearization to one basis tangent per loop trip; beyond, to all at once.
LOOPED_JACOBIAN_MAX = 32


def residual_and_jacobian(
    model_fn: Callable, params: PyTree, *, zero_nonfinite: bool = True
) -> tuple[PyTree, jax.Array]:
    """The residual ``r(θ)`` (its pytree) and its ``m × n`` Jacobian in ravel order.

    The rows are those of :func:`~newtonjax._tree.tree_ravel_real` of the residual
    (a complex residual counts its real and imaginary parts as ``2m`` real rows).
    The residual is linearized once. For ``n <= LOOPED_JACOBIAN_MAX`` the
    linearization is applied to the basis tangents one loop trip at a time, which
    keeps what it stored (values such as ``sin``, ``exp`` of the primal) computed
    once: applied to all ``n`` tangents at once, XLA fuses their computation into
    the ``m × n`` product and evaluates them once per column, which doubled the cost
    of an LM iteration's Jacobian for four-parameter curve fits under ``vmap``.
    Wider problems take all tangents at once, where products with the tangents
    become matrix–matrix products (``sin(A θ)`` with ``A`` 2,000 × 200: 3.1 ms at
    once, 22 ms in a loop; with ``A`` 1,000 × 32: 0.36 ms at once, 0.22 ms in a
    loop). The Jacobian is in the parameters' dtype; with ``zero_nonfinite`` it is
    all zeros if any entry is not finite.
    """
    flat, unravel = tree_ravel(params)
    residual, lin = jax.linearize(lambda x: model_fn(unravel(x)), flat)
    basis = jnp.eye(flat.shape[0], dtype=flat.dtype)
    column = lambda e: tree_ravel_real(lin(e))  # noqa: E731
    if flat.shape[0] <= LOOPED_JACOBIAN_MAX:
        columns = jax.lax.map(column, basis)
    else:
        columns = jax.vmap(column)(basis)
    jac = columns.T.astype(flat.dtype)
    return residual, finite_or_zeros(jac) if zero_nonfinite else jac


def finite_or_zeros(jac: jax.Array) -> jax.Array:
    """``jac``, or all zeros if any entry is not finite."""
    return jnp.where(tree_all_finite(jac), jac, jnp.zeros_like(jac))


def jacobian_curvature(jac: jax.Array) -> DenseCurvature:
    """``G = JᵀJ`` through the (finite) Jacobian ``J``."""
    return DenseCurvature(jac, None, jnp.sum(jac * jac, axis=0))


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


class Gradient(NamedTuple):
    """The incoming updates (the gradient ``g``) as a pytree and flat in the real dtype."""

    tree: PyTree
    flat: jax.Array
    unravel: Any


def gradient_parts(updates: PyTree, dtype) -> Gradient:
    """``g`` as a :class:`Gradient`: the pytree, its flat form in ``dtype``, and back."""
    flat, unravel = tree_ravel(updates)
    return Gradient(updates, flat.astype(dtype), unravel)


class Velocity(NamedTuple):
    """The damped step ``p`` with the gradient's sign (``step = −p``) and its model.

    ``predicted`` is ``m(0) − m(p)``; ``length`` is ``‖D^{1/2}p‖``.
    """

    step: PyTree
    predicted: jax.Array
    length: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class SpectralSystem(NamedTuple):
    """``(G + μD) x = g`` for every ``μ`` through one spectrum of the dense ``G``."""

    curvature: DenseCurvature
    solve: linalg.DampedSpectralSolve
    unravel: Any

    @classmethod
    def build(cls, curv: DenseCurvature, g: Gradient, inv_sqrt_d=None) -> SpectralSystem:
        """Decompose ``D^{-1/2} G D^{-1/2}`` once (``inv_sqrt_d = None`` for ``D = I``)."""
        solve = linalg.damped_spectral_solve(
            g.flat, jacobian=curv.jacobian, matrix=curv.matrix, inv_sqrt_scale=inv_sqrt_d
        )
        return cls(curv, solve, g.unravel)

    def velocity(self, mu: jax.Array) -> Velocity:
        """The solution for ``g`` with its model decrease and scaled length."""
        x, length = self.solve.step(mu)
        # m(0) − m(p) = ½ pᵀGp + μ‖D^{1/2}p‖² for (G + μD)p = −g: no cancellation.
        predicted = 0.5 * curvature_along(self.curvature, x) + mu * length**2
        zero = jnp.zeros((), jnp.int32)
        return Velocity(self.unravel(x), predicted, length, zero, zero)

    def solve_rhs(self, rhs: jax.Array, mu: jax.Array):
        """``x = (G + μD)⁺ rhs`` (flat), ``‖D^{1/2}x‖`` and 0 CG steps."""
        x, length = self.solve.solve(rhs, mu)
        return x, length, jnp.zeros((), jnp.int32)


class CGSystem(NamedTuple):
    """``(G + μD) x = g`` solved matrix-free by CG (two linearized products per iteration).

    ``scale_d`` is the flat ``D`` (ones for ``D = I``), ``unravel_params`` maps it to
    the parameters' pytree.
    """

    op: GGNOperator
    g: Gradient
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

    def cg(self, mu: jax.Array, rhs: PyTree | None = None) -> linalg.CGResult:
        """:func:`~newtonjax.linalg.cg` on ``(G + μD) x = rhs`` (default ``g``)."""
        return linalg.cg(self._matvec(mu), self.g.tree if rhs is None else rhs, **self.cg_options)

    def velocity(self, mu: jax.Array) -> Velocity:
        """The solution for ``g`` with its model decrease ``gᵀx − ½ xᵀGx`` and length."""
        result = self.cg(mu)
        step = result.x
        predicted = tree_vdot(self.g.tree, step) - 0.5 * tree_vdot(step, self.op.matvec(step))
        length = self._length(tree_ravel(step)[0].astype(self.scale_d.dtype))
        return Velocity(
            step,
            predicted,
            length,
            result.num_steps.astype(jnp.int32),
            result.status.astype(jnp.int32),
        )

    def solve_rhs(self, rhs: jax.Array, mu: jax.Array):
        """``x`` (flat) for the flat ``rhs``, ``‖D^{1/2}x‖`` and the CG steps."""
        result = self.cg(mu, self.g.unravel(rhs))
        x = tree_ravel(result.x)[0].astype(self.scale_d.dtype)
        return x, self._length(x), result.num_steps.astype(jnp.int32)
