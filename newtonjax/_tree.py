"""Pytree arithmetic and argument checks shared by every layer.

Layer 0: imports nothing from newtonjax. Inner products run at the highest matmul
precision so that float32 CG and Lanczos recurrences on accelerators do not lose
digits to reduced-precision dot products.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any
Array = jax.Array

__all__ = [
    "tree_vdot",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_axpy",
    "tree_zeros_like",
    "tree_norm",
    "tree_max_abs",
    "tree_where",
    "tree_size",
    "tree_dtype",
    "tree_ravel",
    "check_float_tree",
    "check_same_structure",
    "check_scalar_output",
]


def tree_vdot(a: PyTree, b: PyTree) -> Array:
    """Sum over leaves of ``vdot(a_leaf, b_leaf)``, at highest precision."""
    leaves = jax.tree.leaves(
        jax.tree.map(lambda x, y: jnp.vdot(x, y, precision=jax.lax.Precision.HIGHEST), a, b)
    )
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


def check_float_tree(fn_name: str, arg_name: str, tree: PyTree) -> None:
    """Raise ``TypeError`` unless every leaf has an inexact (float/complex) dtype."""
    leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves_with_path:
        raise ValueError(f"{fn_name}: {arg_name} is an empty pytree")
    for path, leaf in leaves_with_path:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            where = jax.tree_util.keystr(path) or "(root)"
            raise TypeError(
                f"{fn_name}: {arg_name}{where} has dtype {dtype}; curvature needs "
                "floating-point parameters (cast with jnp.asarray(x, jnp.float32) "
                "or float64)"
            )


def check_same_structure(fn_name: str, name_a: str, a: PyTree, name_b: str, b: PyTree) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have equal structure and leaf shapes."""
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    if sa != sb:
        raise ValueError(
            f"{fn_name}: {name_b} must have the same pytree structure as {name_a}; "
            f"got {sb} for {name_b} and {sa} for {name_a}"
        )
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        if jnp.shape(x) != jnp.shape(y):
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(
                f"{fn_name}: {name_b}{where} has shape {jnp.shape(y)} but "
                f"{name_a}{where} has shape {jnp.shape(x)}"
            )


def check_scalar_output(fn_name: str, out: Any) -> None:
    """Raise ``ValueError`` unless ``out`` (an array or ShapeDtypeStruct) is a real scalar."""
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            f"{fn_name}: the objective must return a scalar loss, got shape {shape} "
            "(reduce with jnp.sum or jnp.mean, or use least_squares_objective for "
            "a residual vector)"
        )
    dtype = getattr(out, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn_name}: the objective must return a real floating-point scalar, got dtype {dtype}"
        )
