r"""Geodesic acceleration of a Levenberg–Marquardt step (Transtrum & Sethna 2012, §3).

The damped step (the *velocity*) ``v`` solves ``(G + μD) v = −g``. Following the
geodesic of the model manifold to second order adds ``½a``, where the acceleration
solves the same system with a second right-hand side,

.. math::

   (G + μD)\,a = −J^T ∇²ℓ\, m_{vv}, \qquad m_{vv} = \frac{d^2}{dt^2} m(θ + t v)\Big|_{t=0}

(their eqs. 13–15; ``∇²ℓ = I`` for least squares, where ``m_vv = r_vv``). ``m_vv``
is one nested forward-mode product; the solve reuses the factorization (or runs a
second CG). The corrected step ``v + ½a`` is used only when
``2‖D^{1/2}a‖ ≤ α ‖D^{1/2}v‖`` (their criterion, ``α = 0.75``).

The velocity enters here with the gradient's sign (``step = −v``, as optax blocks
output it); ``m_vv`` is quadratic in the tangent, so it is the same for ``±v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax._curvature import GGNOperator
from newtonjax._tree import (
    HIGHEST,
    PyTree,
    tree_all_finite,
    tree_ravel,
    tree_ravel_real,
    tree_where,
)

__all__ = [
    "second_directional_derivative",
    "acceleration_rhs",
    "GeodesicStep",
    "accelerate",
]


def second_directional_derivative(
    value_fn, params: PyTree, tangent: PyTree, kwargs: dict[str, Any]
) -> PyTree:
    """``m_vv = d²/dt² m(θ + t v)`` at ``t = 0`` by nested forward mode."""
    model_fn, _ = value_fn.bind(**kwargs)

    def first(p):
        return jax.jvp(model_fn, (p,), (tangent,))[1]

    return jax.jvp(first, (params,), (tangent,))[1]


def acceleration_rhs(
    value_fn,
    op: GGNOperator,
    params: PyTree,
    tangent: PyTree,
    kwargs: dict[str, Any],
    dtype,
    jacobian: jax.Array | None = None,
) -> jax.Array:
    """``Jᵀ ∇²ℓ m_vv`` in ravel order (``Jᵀ r_vv`` for least squares).

    With the dense least-squares ``jacobian`` the product with ``Jᵀ`` is a matmul;
    otherwise it is a vector–Jacobian product of ``op`` (after a Hessian–vector
    product of the output loss for a composite objective).
    """
    m_vv = second_directional_derivative(value_fn, params, tangent, kwargs)
    if jacobian is not None:
        m_vv_flat = tree_ravel_real(m_vv).astype(dtype)
        return jnp.matmul(jacobian.T, m_vv_flat, precision=HIGHEST)
    if value_fn.identity_loss_hessian:
        rhs = op.vjp(m_vv)
    else:
        _, loss_fn = value_fn.bind(**kwargs)
        h = jax.jvp(jax.grad(loss_fn), (op.outputs,), (m_vv,))[1]
        rhs = op.vjp(h)
    return tree_ravel(rhs)[0].astype(dtype)


class GeodesicStep(NamedTuple):
    """The step to try and how the acceleration was judged (scalars but ``step``).

    Attributes:
      step: ``v + ½a`` if accelerated, else ``v`` (gradient sign, a pytree).
      ratio: ``2‖D^{1/2}a‖ / ‖D^{1/2}v‖`` (the dtype's max where not finite).
      accelerated: whether ``step`` holds the acceleration.
    """

    step: PyTree
    ratio: jax.Array
    accelerated: jax.Array


def accelerate(
    step: PyTree,
    velocity_length: jax.Array,
    acceleration: jax.Array,
    acceleration_length: jax.Array,
    max_ratio: jax.Array,
    unravel: Callable[[jax.Array], PyTree],
    dtype,
) -> GeodesicStep:
    """Transtrum & Sethna's test ``2‖D^{1/2}a‖ ≤ α‖D^{1/2}v‖`` and the corrected step.

    Args:
      step: the velocity with the gradient's sign, ``−v`` (a pytree).
      velocity_length: ``‖D^{1/2}v‖``.
      acceleration: the flat solution ``w`` of ``(G + μD) w = Jᵀ∇²ℓ m_vv``, so that
        ``a = −w``.
      acceleration_length: ``‖D^{1/2}w‖``.
      max_ratio: ``α``.
      unravel: flat vector → pytree like ``step``.
      dtype: the real dtype of the computation.
    """
    ratio = 2.0 * acceleration_length / jnp.maximum(velocity_length, jnp.finfo(dtype).tiny)
    accelerated = (
        jnp.isfinite(ratio)
        & (ratio <= jnp.asarray(max_ratio, dtype))
        & tree_all_finite(acceleration)
        & (velocity_length > 0)
    )
    # Move = v + ½a = −step − ½w, so the gradient-sign output is step + ½w.
    total = tree_ravel(step)[0].astype(dtype) + 0.5 * acceleration
    step = tree_where(accelerated, unravel(total), step)
    ratio = jnp.where(jnp.isfinite(ratio), ratio, jnp.finfo(dtype).max)
    return GeodesicStep(step, ratio, accelerated)
