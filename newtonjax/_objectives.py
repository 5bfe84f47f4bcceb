"""Objectives that carry their structure: least squares and composite losses.

Layer 1. An objective is a plain callable ``params -> scalar`` and so a valid optax
``value_fn``; it also carries the pieces that Gauss–Newton-type curvature needs:

* :func:`least_squares_objective` ``r`` computes ``f(θ) = ½‖r(θ)‖²`` and exposes
  ``r`` (Gauss–Newton curvature ``JᵀJ``);
* :func:`composite_objective` ``(m, ℓ)`` computes ``f(θ) = ℓ(m(θ))`` and exposes the
  model ``m`` and the output loss ``ℓ`` (generalized Gauss–Newton ``Jᵀ ∇²ℓ J``,
  Schraudolph 2002; Martens 2020 §8).

Both keep the wrapped function's signature (``functools.update_wrapper``), so that
optax's line searches, which match extra keyword arguments against ``value_fn``'s
signature, route per-batch keywords to them unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from newtonjax._tree import PyTree, tree_vdot

__all__ = [
    "CompositeObjective",
    "LeastSquaresObjective",
    "composite_objective",
    "least_squares_objective",
    "half_squared_norm",
]


def half_squared_norm(outputs: PyTree) -> jax.Array:
    """``½‖z‖²`` summed over every leaf of ``z``."""
    return 0.5 * tree_vdot(outputs, outputs).real


class CompositeObjective:
    """``f(θ, *args, **kw) = output_loss_fn(model_fn(θ, *args, **kw))``.

    Attributes:
      model_fn: ``(params, *args, **kwargs) -> outputs`` (any pytree of arrays).
      output_loss_fn: ``outputs -> scalar``; its Hessian should be positive
        semi-definite (convex loss) for the generalized Gauss–Newton matrix to be.
    """

    def __init__(self, model_fn: Callable[..., PyTree], output_loss_fn: Callable):
        if not callable(model_fn):
            raise TypeError(f"composite_objective: model_fn must be callable, got {model_fn!r}")
        if not callable(output_loss_fn):
            raise TypeError(
                f"composite_objective: output_loss_fn must be callable, got {output_loss_fn!r}"
            )
        self.model_fn = model_fn
        self.output_loss_fn = output_loss_fn
        functools.update_wrapper(self, model_fn)

    def __call__(self, params: PyTree, *args: Any, **kwargs: Any) -> jax.Array:
        return self.output_loss_fn(self.model_fn(params, *args, **kwargs))

    def bind(self, *args: Any, **kwargs: Any) -> tuple[Callable, Callable]:
        """The model with ``args``/``kwargs`` applied, and the output loss."""
        if not args and not kwargs:
            return self.model_fn, self.output_loss_fn
        return (lambda p: self.model_fn(p, *args, **kwargs)), self.output_loss_fn

    #: Whether the output loss is ``½‖z‖²`` (its Hessian is the identity).
    identity_loss_hessian = False

    # Objectives wrapping the same functions are the same objective (so that
    # compiled solves are reused across calls that rebuild the wrapper).
    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.model_fn is self.model_fn
            and other.output_loss_fn is self.output_loss_fn
        )

    def __hash__(self) -> int:
        return hash((type(self), id(self.model_fn), id(self.output_loss_fn)))

    def __repr__(self) -> str:
        name = getattr(self.model_fn, "__name__", repr(self.model_fn))
        loss = getattr(self.output_loss_fn, "__name__", repr(self.output_loss_fn))
        return f"{type(self).__name__}({name}, {loss})"


class LeastSquaresObjective(CompositeObjective):
    """``f(θ, *args, **kw) = ½‖residual_fn(θ, *args, **kw)‖²``.

    Attributes:
      residual_fn: ``(params, *args, **kwargs) -> residuals`` (an array or pytree).
    """

    identity_loss_hessian = True

    def __init__(self, residual_fn: Callable[..., PyTree]):
        if not callable(residual_fn):
            raise TypeError(
                f"least_squares_objective: residual_fn must be callable, got {residual_fn!r}"
            )
        super().__init__(residual_fn, half_squared_norm)

    @property
    def residual_fn(self) -> Callable[..., PyTree]:
        return self.model_fn

    def __repr__(self) -> str:
        name = getattr(self.model_fn, "__name__", repr(self.model_fn))
        return f"LeastSquaresObjective({name})"


def least_squares_objective(residual_fn: Callable[..., PyTree]) -> LeastSquaresObjective:
    """Wrap a residual function as the objective ``½‖r(θ)‖²``.

    The result is a valid optax ``value_fn`` and carries ``residual_fn`` for
    Gauss–Newton and Levenberg–Marquardt curvature ``JᵀJ``.

    Args:
      residual_fn: ``(params, *args, **kwargs) -> residuals``.

    Returns:
      A :class:`LeastSquaresObjective`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> obj = nj.least_squares_objective(lambda w: w - jnp.array([1.0, 2.0]))
      >>> float(obj(jnp.zeros(2)))
      2.5
    """
    return LeastSquaresObjective(residual_fn)


def composite_objective(
    model_fn: Callable[..., PyTree], output_loss_fn: Callable[[PyTree], jax.Array]
) -> CompositeObjective:
    """Wrap ``model_fn`` and a convex ``output_loss_fn`` as ``ℓ(m(θ))``.

    The result is a valid optax ``value_fn`` and carries the model and output loss
    for generalized Gauss–Newton products ``Jᵀ ∇²ℓ J v`` (Schraudolph 2002).

    Args:
      model_fn: ``(params, *args, **kwargs) -> outputs``.
      output_loss_fn: ``outputs -> scalar``.

    Returns:
      A :class:`CompositeObjective`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> obj = nj.composite_objective(lambda w: 2.0 * w, lambda z: jnp.sum(z**2))
      >>> float(obj(jnp.ones(3)))
      12.0
    """
    return CompositeObjective(model_fn, output_loss_fn)
