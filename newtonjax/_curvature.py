"""Curvature primitives on pytrees: gradients, Jacobian, Hessian and GGN products.

Layer 1 (imports only ``_checks``, ``_tree`` and ``_objectives``). Every product is matrix-free and
built from ``jax.jvp``, ``jax.vjp`` and ``jax.linearize``; dense matrices are built
only by the functions whose names say so (:func:`hessian_matrix`,
:func:`jacobian_matrix`), in ``jax.flatten_util.ravel_pytree`` order.

Cost model (one forward pass F, one backward pass B ≈ 2F):

* :func:`hvp` — forward-over-reverse, ``jvp(grad f)``: about F + B + their tangents.
* :func:`hessian_operator` — ``jax.linearize`` of the gradient, once; each further
  product replays only the linear (tangent) program, so CG iterations neither retrace
  nor recompute the primal pass.
* :func:`ggn_vp` — ``J v`` by the linearized model, ``∇²ℓ (Jv)`` on the small output
  space, then ``Jᵀ`` by transposing the same linearization (Schraudolph 2002;
  Martens & Grosse 2015 §6): one primal pass shared by both products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax._checks import (
    check_float_tree,
    check_same_structure,
    check_scalar_output,
    check_static_int,
)
from newtonjax._objectives import CompositeObjective
from newtonjax._tree import PyTree, tree_ravel, tree_vdot

__all__ = [
    "hvp",
    "HessianOperator",
    "hessian_operator",
    "GGNOperator",
    "ggn_operator",
    "ggn_vp",
    "gauss_newton_operator",
    "jacobian_vp",
    "jacobian_tvp",
    "jtj_vp",
    "hessian_matrix",
    "jacobian_matrix",
    "hessian_diag",
    "TaylorModel",
    "taylor2",
    "materialize",
]


def _bind(f: Callable, args: tuple, kwargs: dict) -> Callable:
    if not args and not kwargs:
        return f
    return lambda p: f(p, *args, **kwargs)


def _check_objective(fn_name: str, f: Callable, params: PyTree) -> None:
    if not callable(f):
        raise TypeError(f"{fn_name}: the objective must be callable, got {type(f).__name__}")
    check_float_tree(fn_name, "params", params)
    check_scalar_output(fn_name, jax.eval_shape(f, params))


def _check_vector(fn_name: str, params: PyTree, v: PyTree, name: str = "v") -> None:
    check_same_structure(fn_name, "params", params, name, v)


def _unit(x: jax.Array) -> jax.Array:
    return x


# --------------------------------------------------------------------------- Hessian


def hvp(
    f: Callable[..., jax.Array], params: PyTree, v: PyTree, *args: Any, **kwargs: Any
) -> PyTree:
    """Hessian-vector product ``∇²f(θ) v`` by forward-over-reverse differentiation.

    Args:
      f: scalar objective ``f(params, *args, **kwargs)``.
      params: the point θ, any pytree of float arrays.
      v: the direction, same structure and shapes as ``params``.
      *args: extra positional arguments of ``f`` (data), not differentiated.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      ``∇²f(θ) v`` with the structure of ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> f = lambda w: w[0] ** 2 + w[0] * w[1] - w[1] ** 2
      >>> nj.hvp(f, jnp.zeros(2), jnp.array([1.0, 0.0]))
      Array([2., 1.], dtype=float32)

    References:
      Pearlmutter (1994), "Fast exact multiplication by the Hessian";
      Nocedal & Wright (2006) §8.1.
    """
    fb = _bind(f, args, kwargs)
    _check_objective("hvp", fb, params)
    _check_vector("hvp", params, v)
    return jax.jvp(jax.grad(fb), (params,), (v,))[1]


class HessianOperator:
    """The Hessian at a point as a linear operator, with the value and gradient there.

    Attributes:
      value: ``f(θ)``.
      grad: ``∇f(θ)`` (structure of ``params``).
      params: θ.
    """

    def __init__(self, value: jax.Array, grad: PyTree, params: PyTree, linear_fn: Callable):
        self.value = value
        self.grad = grad
        self.params = params
        self._linear_fn = linear_fn

    def matvec(self, v: PyTree) -> PyTree:
        """``∇²f(θ) v``."""
        return self._linear_fn(v)[1]

    __call__ = matvec

    def as_matrix(self) -> jax.Array:
        """The dense ``n × n`` Hessian in ``ravel_pytree`` order (n products)."""
        return materialize(self.matvec, self.params)


def hessian_operator(
    f: Callable[..., jax.Array], params: PyTree, *args: Any, **kwargs: Any
) -> HessianOperator:
    """Linearize the gradient once; return ``v -> ∇²f(θ) v`` with ``f(θ)``, ``∇f(θ)``.

    ``jax.linearize`` runs the primal and reverse pass once and keeps the linear
    (tangent) program, so each product costs about one gradient and repeated products
    — the inner loop of CG or Lanczos — never retrace ``f``.

    Args:
      f: scalar objective ``f(params, *args, **kwargs)``.
      params: the point θ.
      *args: extra positional arguments of ``f``.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      A :class:`HessianOperator` (callable on pytrees like ``params``).

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> op = nj.hessian_operator(lambda w: jnp.sum(w**3), jnp.array([1.0, 2.0]))
      >>> op(jnp.ones(2))
      Array([ 6., 12.], dtype=float32)
    """
    fb = _bind(f, args, kwargs)
    _check_objective("hessian_operator", fb, params)
    (value, grad), linear_fn = jax.linearize(jax.value_and_grad(fb), params)
    return HessianOperator(value, grad, params, linear_fn)


# ------------------------------------------------------------------ Gauss–Newton


class GGNOperator:
    """The generalized Gauss–Newton matrix ``G = Jᵀ ∇²ℓ J`` at θ as an operator.

    Attributes:
      value: ``ℓ(m(θ))``.
      grad: ``Jᵀ ∇ℓ(m(θ))``, the gradient of the composite objective.
      outputs: ``m(θ)``.
      params: θ.
    """

    def __init__(self, value, grad, outputs, params, jvp_fn, vjp_fn, loss_hvp):
        self.value = value
        self.grad = grad
        self.outputs = outputs
        self.params = params
        self._jvp_fn = jvp_fn
        self._vjp_fn = vjp_fn
        self._loss_hvp = loss_hvp

    def jvp(self, v: PyTree) -> PyTree:
        """``J v`` (model outputs' tangent)."""
        return self._jvp_fn(v)

    def vjp(self, u: PyTree) -> PyTree:
        """``Jᵀ u`` (structure of ``params``)."""
        return self._vjp_fn(u)

    def matvec(self, v: PyTree) -> PyTree:
        """``Jᵀ ∇²ℓ J v``."""
        return self._vjp_fn(self._loss_hvp(self._jvp_fn(v)))

    __call__ = matvec

    def as_matrix(self) -> jax.Array:
        """The dense ``n × n`` GGN in ``ravel_pytree`` order (n products)."""
        return materialize(self.matvec, self.params)


def _ggn_operator(model_fn, output_loss_fn, params, identity_loss_hessian, fn_name):
    check_float_tree(fn_name, "params", params)
    outputs, jvp_fn = jax.linearize(model_fn, params)
    transpose = jax.linear_transpose(jvp_fn, params)

    def vjp_fn(u):
        return transpose(u)[0]

    if identity_loss_hessian:
        value = 0.5 * tree_vdot(outputs, outputs).real
        grad_outputs = outputs
        loss_hvp = _unit
    else:
        check_scalar_output(fn_name, jax.eval_shape(output_loss_fn, outputs))
        value, grad_outputs = jax.value_and_grad(output_loss_fn)(outputs)
        _, loss_hvp = jax.linearize(jax.grad(output_loss_fn), outputs)
    grad = vjp_fn(grad_outputs)
    return GGNOperator(value, grad, outputs, params, jvp_fn, vjp_fn, loss_hvp)


def ggn_operator(
    model_fn: Callable[..., PyTree],
    output_loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *args: Any,
    **kwargs: Any,
) -> GGNOperator:
    """The GGN operator ``v -> Jᵀ ∇²ℓ J v`` of a model and an output loss given apart.

    The model is linearized once; the operator carries the value and gradient of
    ``output_loss_fn(model_fn(θ))``. For an objective built by
    :func:`least_squares_objective` or :func:`composite_objective`, use
    :func:`gauss_newton_operator`, which reads both functions off the objective.

    Args:
      model_fn: ``(params, *args, **kwargs) -> outputs``.
      output_loss_fn: ``outputs -> scalar``.
      params: the point θ.
      *args: extra positional arguments of ``model_fn``.
      **kwargs: extra keyword arguments of ``model_fn``.

    Returns:
      A :class:`GGNOperator`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> op = nj.ggn_operator(lambda w: 3.0 * w, lambda z: jnp.sum(z**2), jnp.ones(2))
      >>> op(jnp.array([1.0, 0.0]))
      Array([18.,  0.], dtype=float32)
    """
    return _ggn_operator(
        _bind(model_fn, args, kwargs), output_loss_fn, params, False, "ggn_operator"
    )


def gauss_newton_operator(
    objective: CompositeObjective, params: PyTree, *args: Any, **kwargs: Any
) -> GGNOperator:
    """The (generalized) Gauss–Newton operator of a structured objective.

    What the update rules call: the objective itself says whether ``∇²ℓ = I``
    (least squares, ``G = JᵀJ``), so no output-loss Hessian product is spent there.
    For a model and an output loss given apart, use :func:`ggn_operator`.

    Args:
      objective: from :func:`least_squares_objective` (``G = JᵀJ``) or
        :func:`composite_objective` (``G = Jᵀ∇²ℓJ``).
      params: the point θ.
      *args: extra positional arguments of the objective.
      **kwargs: extra keyword arguments of the objective.

    Returns:
      A :class:`GGNOperator` whose ``value`` and ``grad`` are the objective's.

    Raises:
      TypeError: if ``objective`` carries no model/residual structure.
    """
    if not isinstance(objective, CompositeObjective):
        raise TypeError(
            "gauss_newton_operator: the objective must carry its structure; build it "
            "with nj.least_squares_objective(residual_fn) or "
            f"nj.composite_objective(model_fn, output_loss_fn), got {type(objective).__name__}"
        )
    model_fn, loss_fn = objective.bind(*args, **kwargs)
    return _ggn_operator(
        model_fn, loss_fn, params, objective.identity_loss_hessian, "gauss_newton_operator"
    )


def ggn_vp(
    model_fn: Callable[..., PyTree],
    output_loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    v: PyTree,
    *args: Any,
    **kwargs: Any,
) -> PyTree:
    """Generalized Gauss–Newton product ``Jᵀ ∇²ℓ(m(θ)) J v``.

    ``J`` is the Jacobian of ``model_fn`` at θ. The product is ``J v`` (forward mode),
    the output loss's Hessian product on the small output space, then ``Jᵀ`` by
    transposing the same linearization, so the primal pass runs once.

    Args:
      model_fn: ``(params, *args, **kwargs) -> outputs``.
      output_loss_fn: ``outputs -> scalar``, convex for a PSD result.
      params: the point θ.
      v: direction, same structure as ``params``.
      *args: extra positional arguments of ``model_fn``.
      **kwargs: extra keyword arguments of ``model_fn``.

    Returns:
      ``Jᵀ ∇²ℓ J v`` with the structure of ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> nj.ggn_vp(lambda w: w**2, lambda z: 0.5 * jnp.sum(z**2), jnp.ones(2), jnp.ones(2))
      Array([4., 4.], dtype=float32)

    References:
      Schraudolph (2002), "Fast curvature matrix-vector products";
      Martens (2020), "New insights and perspectives on the natural gradient" §8.
    """
    _check_vector("ggn_vp", params, v)
    return ggn_operator(model_fn, output_loss_fn, params, *args, **kwargs).matvec(v)


# --------------------------------------------------------------- Jacobian products


def jacobian_vp(
    residual_fn: Callable[..., PyTree], params: PyTree, v: PyTree, *args, **kwargs
) -> PyTree:
    """Jacobian-vector product ``J v`` of ``residual_fn`` at θ (the tangent only).

    Unlike :func:`jax.jvp` it takes the point and one tangent (not tuples) and
    returns only the tangent output.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> r = lambda w: jnp.stack([w[0] * w[1], w[1]])
      >>> nj.jacobian_vp(r, jnp.array([2.0, 3.0]), jnp.ones(2))
      Array([5., 1.], dtype=float32)
    """
    check_float_tree("jacobian_vp", "params", params)
    _check_vector("jacobian_vp", params, v)
    return jax.jvp(_bind(residual_fn, args, kwargs), (params,), (v,))[1]


def jacobian_tvp(
    residual_fn: Callable[..., PyTree], params: PyTree, u: PyTree, *args, **kwargs
) -> PyTree:
    """Transposed-Jacobian product ``Jᵀ u`` of ``residual_fn`` at θ.

    Unlike :func:`jax.vjp` it returns the product itself, not a function.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> r = lambda w: jnp.stack([w[0] * w[1], w[1]])
      >>> nj.jacobian_tvp(r, jnp.array([2.0, 3.0]), jnp.ones(2))
      Array([3., 3.], dtype=float32)
    """
    check_float_tree("jacobian_tvp", "params", params)
    out, vjp_fn = jax.vjp(_bind(residual_fn, args, kwargs), params)
    check_same_structure("jacobian_tvp", "residual_fn(params)", out, "u", u)
    return vjp_fn(u)[0]


def jtj_vp(
    residual_fn: Callable[..., PyTree], params: PyTree, v: PyTree, *args, **kwargs
) -> PyTree:
    """Gauss–Newton product ``JᵀJ v`` of ``residual_fn`` at θ.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> nj.jtj_vp(lambda w: 2.0 * w, jnp.ones(2), jnp.array([1.0, 0.0]))
      Array([4., 0.], dtype=float32)
    """
    _check_vector("jtj_vp", params, v)
    op = _ggn_operator(_bind(residual_fn, args, kwargs), None, params, True, "jtj_vp")
    return op.matvec(v)


# ------------------------------------------------------------------ dense matrices


def materialize(matvec: Callable[[PyTree], PyTree], params: PyTree) -> jax.Array:
    """Dense matrix of a square operator on pytrees like ``params``, ravel order.

    Column ``i`` is ``matvec(e_i)``; the ``n`` products run batched under ``vmap``.
    """
    flat, unravel = tree_ravel(params)
    n = flat.shape[0]

    def column(e):
        return tree_ravel(matvec(unravel(e)))[0]

    return jax.vmap(column, out_axes=1)(jnp.eye(n, dtype=flat.dtype))


def hessian_matrix(
    f: Callable[..., jax.Array], params: PyTree, *args: Any, **kwargs: Any
) -> jax.Array:
    """Dense Hessian ``∇²f(θ)`` as an ``n × n`` array in ``ravel_pytree`` order.

    For small problems and tests; memory is ``O(n²)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> nj.hessian_matrix(lambda w: w[0] ** 2 + w[0] * w[1] - w[1] ** 2, jnp.zeros(2))
      Array([[ 2.,  1.],
             [ 1., -2.]], dtype=float32)
    """
    fb = _bind(f, args, kwargs)
    _check_objective("hessian_matrix", fb, params)
    flat, unravel = tree_ravel(params)
    return jax.hessian(lambda x: fb(unravel(x)))(flat)


def jacobian_matrix(
    fn: Callable[..., PyTree], params: PyTree, *args: Any, **kwargs: Any
) -> jax.Array:
    """Dense Jacobian ``∂ fn / ∂θ`` as an ``m × n`` array (outputs and params raveled).

    Forward mode when ``n ≤ m`` (tall Jacobians, typical of least squares), reverse
    mode otherwise.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> nj.jacobian_matrix(lambda w: jnp.stack([w[0] * w[1], w[1]]), jnp.array([2.0, 3.0]))
      Array([[3., 2.],
             [0., 1.]], dtype=float32)
    """
    fb = _bind(fn, args, kwargs)
    check_float_tree("jacobian_matrix", "params", params)
    flat, unravel = tree_ravel(params)

    def flat_fn(x):
        return tree_ravel(fb(unravel(x)))[0]

    m = jax.eval_shape(flat_fn, flat).shape[0]
    jac = jax.jacfwd if flat.shape[0] <= m else jax.jacrev
    return jac(flat_fn)(flat)


# ------------------------------------------------------------------------ diagonal


def hessian_diag(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array | None = None,
    num_samples: int = 100,
    batch_size: int | None = 64,
    **kwargs: Any,
) -> PyTree:
    """Diagonal of the Hessian, exact or by Hutchinson's estimator.

    Without ``key`` the diagonal is exact: ``n`` products ``eᵢᵀ H eᵢ`` from one
    linearized gradient, run ``batch_size`` at a time, so memory stays
    ``O(batch_size · n)`` and the dense Hessian is never formed. With ``key`` it is
    Hutchinson's estimate ``E[z ⊙ Hz]`` over ``num_samples`` Rademacher vectors
    (Bekas, Kokiopoulou & Saad 2007), unbiased with variance ``Σ_{j≠i} H_ij²`` per
    entry and sample.

    Args:
      f: scalar objective ``f(params, *args, **kwargs)``.
      params: the point θ.
      *args: extra positional arguments of ``f``.
      key: a PRNG key for the stochastic estimate; ``None`` for the exact diagonal.
      num_samples: number of probe vectors (stochastic estimate only).
      batch_size: products evaluated together (``None``: all at once).
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      The diagonal with the structure of ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> nj.hessian_diag(lambda w: jnp.sum(w**3) + w[0] * w[1], jnp.array([1.0, 2.0]))
      Array([ 6., 12.], dtype=float32)
    """
    check_static_int("hessian_diag", "num_samples", num_samples)
    if batch_size is not None:
        check_static_int("hessian_diag", "batch_size", batch_size)
    op = hessian_operator(f, params, *args, **kwargs)
    flat, unravel = tree_ravel(params)
    n = flat.shape[0]

    def flat_hvp(x):
        return tree_ravel(op.matvec(unravel(x)))[0]

    if key is None:

        def entry(i):
            e = jax.nn.one_hot(i, n, dtype=flat.dtype)
            return flat_hvp(e)[i]

        diag = jax.lax.map(entry, jnp.arange(n), batch_size=batch_size)
    else:

        def sample(k):
            z = jax.random.rademacher(k, (n,), dtype=flat.dtype)
            return z * flat_hvp(z)

        keys = jax.random.split(key, num_samples)
        diag = jnp.mean(jax.lax.map(sample, keys, batch_size=batch_size), axis=0)
    return unravel(diag)


# ---------------------------------------------------------------------- Taylor model


class TaylorModel(NamedTuple):
    """Second-order Taylor model ``m(d) = f + g·d + ½ d·H d`` at θ."""

    value: jax.Array
    grad: PyTree
    hvp: Callable[[PyTree], PyTree]

    def __call__(self, d: PyTree) -> jax.Array:
        check_same_structure("TaylorModel", "grad", self.grad, "d", d)
        return self.value + tree_vdot(self.grad, d) + 0.5 * tree_vdot(d, self.hvp(d))

    def decrease(self, d: PyTree) -> jax.Array:
        """Predicted decrease ``f − m(d) = −g·d − ½ d·H d``."""
        return self.value - self(d)


def taylor2(f: Callable[..., jax.Array], params: PyTree, *args: Any, **kwargs: Any) -> TaylorModel:
    """The second-order Taylor model of ``f`` at θ.

    ``taylor2(f, θ)(d) = f(θ) + ∇f(θ)·d + ½ dᵀ ∇²f(θ) d``, exact for quadratics and
    accurate to ``O(‖d‖³)`` otherwise: the local model every Newton, trust-region
    and Levenberg–Marquardt step minimizes (Nocedal & Wright 2006, §2.2, eq. 4.1).

    Args:
      f: scalar objective ``f(params, *args, **kwargs)``.
      params: the expansion point θ.
      *args: extra positional arguments of ``f``.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      A :class:`TaylorModel`; call it on a displacement ``d`` (same structure as θ).

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> model = nj.taylor2(lambda w: jnp.sum(w**2), jnp.ones(2))
      >>> float(model(-jnp.ones(2)))
      0.0
    """
    op = hessian_operator(f, params, *args, **kwargs)
    return TaylorModel(op.value, op.grad, op.matvec)
