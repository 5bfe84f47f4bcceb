"""Pytree arithmetic shared by every layer.

Layer 0: imports only :mod:`newtonjax._checks`. Inner products run at the highest
matmul precision (:data:`HIGHEST`, also the precision of every dense ``matmul`` in
the library) so that float32 CG and Lanczos recurrences on accelerators do not lose
digits to reduced-precision dot products. The argument checks live in
:mod:`newtonjax._checks`; the pytree ones are re-exported here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from newtonjax._checks import (  # re-exported: the pytree argument checks
    check_float_tree,
    check_same_structure,
    check_scalar_output,
)

PyTree = Any
Array = jax.Array

HIGHEST = jax.lax.Precision.HIGHEST

__all__ = [
    "HIGHEST",
    "tree_vdot",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_axpy",
    "tree_zeros_like",
    "tree_norm",
    "tree_max_abs",
    "tree_where",
    "tree_all_finite",
    "tree_size",
    "tree_dtype",
    "tree_ravel",
    "tree_ravel_real",
    "check_float_tree",
    "check_same_structure",
    "check_scalar_output",
]


def tree_vdot(a: PyTree, b: PyTree) -> Array:
    """Sum over leaves of ``vdot(a_leaf, b_leaf)``, at highest precision."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y, precision=HIGHEST), a, b))
    if not leaves:
        return jnp.zeros(())
    return sum(leaves[1:], leaves[0])


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(s: Array | float, a: PyTree) -> PyTree:
    """``s * a`` for a scalar ``s``; keeps each leaf's dtype."""
    return jax.tree.map(lambda x: (s * x).astype(x.dtype), a)


def tree_axpy(s: Array | float, x: PyTree, y: PyTree) -> PyTree:
    """``s * x + y``, keeping ``y``'s leaf dtypes."""
    return jax.tree.map(lambda xi, yi: (s * xi + yi).astype(yi.dtype), x, y)


def tree_zeros_like(a: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, a)


def tree_norm(a: PyTree) -> Array:
    """Euclidean norm over all leaves."""
    return jnp.sqrt(jnp.maximum(tree_vdot(a, a).real, 0.0))


def tree_max_abs(a: PyTree) -> Array:
    """Infinity norm over all leaves (0 for an empty tree)."""
    leaves = [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(a) if jnp.size(x) > 0]
    if not leaves:
        return jnp.zeros(())
    return jnp.max(jnp.stack(leaves))


def tree_where(cond: Array, a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``jnp.where(cond, a, b)`` with a scalar (or broadcastable) ``cond``."""
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def tree_all_finite(a: PyTree) -> Array:
    """Whether every entry of every leaf is finite (a bool scalar; ``True`` for no leaves)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(a)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def tree_size(a: PyTree) -> int:
    """Total number of scalar entries (static)."""
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(a))


def tree_dtype(a: PyTree) -> jnp.dtype:
    """The common result dtype of all leaves."""
    leaves = jax.tree.leaves(a)
    if not leaves:
        return jnp.dtype(jnp.float32)
    return jnp.result_type(*leaves)


def tree_ravel(a: PyTree) -> tuple[Array, Any]:
    """``jax.flatten_util.ravel_pytree``: the flat vector and the function back."""
    return ravel_pytree(a)


def tree_ravel_real(a: PyTree) -> Array:
    """The leaves as one real vector; complex entries ``z`` as ``[Re z, Im z]``.

    For residuals: ``‖r‖²`` and the Gauss–Newton matrix and gradient of ``½‖r‖²``
    are those of this real vector (``JᵀJ`` of the stacked Jacobian is
    ``Re(JᴴJ)``, ``Jᵀr`` is ``Re(Jᴴr)``).
    """
    flat = tree_ravel(a)[0]
    if jnp.iscomplexobj(flat):
        return jnp.concatenate([flat.real, flat.imag])
    return flat
