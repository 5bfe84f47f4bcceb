"""Operators and matrices as the linalg solvers take them, and their status codes.

Layer 2: imports only layer 0. An operator is a callable ``matvec(v) -> H v`` that
maps a pytree to a pytree of the same structure and leaf shapes; a dense routine
takes a square float matrix. What every solver in :mod:`newtonjax.linalg` does to
its inputs before it iterates lives here: checking an operator's output structure
and casting it to the right-hand side's dtypes, checking a matrix and right-hand
side, and turning a :class:`~newtonjax.linalg.SolverStatus` member into the int32
array that the results carry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from newtonjax._checks import check_same_structure
from newtonjax._tree import PyTree, tree_dtype

__all__ = [
    "wrap_operator",
    "cast_like",
    "real_dtype",
    "status_code",
    "check_matrix_and_rhs",
    "symmetrize",
]

Array = jax.Array


def wrap_operator(
    fn_name: str, op_name: str, op: Callable[[PyTree], PyTree], like: PyTree, like_name: str
) -> Callable[[PyTree], PyTree]:
    """Check ``op(like)`` has ``like``'s structure and shapes; cast its leaves to ``like``'s.

    The check runs ``op`` abstractly (``jax.eval_shape``), so it costs no product.

    Raises:
      TypeError: if ``op`` is not callable.
      ValueError: if ``op(like)`` differs from ``like`` in structure or leaf shapes.
    """
    if not callable(op):
        raise TypeError(
            f"{fn_name}: {op_name} must be a callable v -> H v on pytrees, got {type(op).__name__}"
        )
    out = jax.eval_shape(op, like)
    check_same_structure(fn_name, like_name, like, f"{op_name}({like_name})", out)
    dtypes = jax.tree.map(lambda x: jnp.result_type(x), like)

    def wrapped(v: PyTree) -> PyTree:
        return jax.tree.map(lambda o, dt: jnp.asarray(o).astype(dt), op(v), dtypes)

    return wrapped


def cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """``tree`` with each leaf cast to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), tree, like)


def real_dtype(tree: PyTree) -> jnp.dtype:
    """The real dtype of the pytree's common dtype (float64 for complex128)."""
    return jnp.finfo(tree_dtype(tree)).dtype


def status_code(code: enum.IntEnum) -> Array:
    """A status enum member as the int32 scalar array that results carry."""
    return jnp.asarray(int(code), jnp.int32)


def check_matrix_and_rhs(
    fn_name: str, H: Any, b: Any, b_name: str = "b", *, allow_matrix_rhs: bool = True
) -> tuple[Array, Array]:
    """Check ``H`` is a square float matrix and ``b`` an ``(n,)`` (or ``(n, k)``) array.

    Returns:
      ``(H, b)`` as arrays of their common dtype.
    """
    H = jnp.asarray(H)
    b = jnp.asarray(b)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{fn_name}: H must be a square (n, n) matrix, got shape {H.shape}")
    n = H.shape[0]
    if n == 0:
        raise ValueError(f"{fn_name}: H must not be empty, got shape {H.shape}")
    ok_ndim = b.ndim == 1 or (allow_matrix_rhs and b.ndim == 2)
    if not ok_ndim or b.shape[0] != n:
        want = "(n,) or (n, k)" if allow_matrix_rhs else "(n,)"
        raise ValueError(
            f"{fn_name}: {b_name} must have shape {want} with n = {n} matching H, "
            f"got shape {b.shape}"
        )
    for name, x in (("H", H), (b_name, b)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"{fn_name}: {name} must have a real floating-point dtype, got {x.dtype}"
            )
    dtype = jnp.result_type(H, b)
    return H.astype(dtype), b.astype(dtype)


def symmetrize(H: Array) -> Array:
    """``½ (H + Hᵀ)``: the symmetric part, which the symmetric solvers read."""
    return 0.5 * (H + H.T)
