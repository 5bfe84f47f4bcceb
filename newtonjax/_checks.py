"""Argument checks shared by every layer.

Layer 0: imports nothing from newtonjax. Every message names the function, the
argument and the value (``scale_by_newton: max_cg_steps must be >= 1, got 0``).

Numeric hyperparameters are validated only when they are concrete Python (or NumPy)
numbers. Arrays pass unchecked, so hyperparameters traced under
``optax.inject_hyperparams``, ``jit`` or ``vmap`` keep working (lineax validates its
tolerances the same way). ``None`` passes too: it stands for a default that the
caller resolves.

* A *count* (``max_steps``, ``max_cg_steps``) is an integer: ``bool`` and ``float``
  are rejected with ``TypeError``, Python integers below the minimum with
  ``ValueError``. A *static* integer (one that sets a shape or a Python loop count)
  must be a Python integer.
* *Positive* means finite and ``> 0``; *non-negative* finite and ``>= 0``. A check
  that admits ``inf`` says so (``allow_inf=True``) and so does the docstring of the
  function that calls it. NaN is always rejected.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_python_number",
    "check_positive",
    "check_nonnegative",
    "check_in_range",
    "check_count",
    "check_static_int",
    "check_choice",
    "is_concrete",
    "check_finite_tree",
    "check_float_tree",
    "check_real_tree",
    "check_same_structure",
    "check_scalar_output",
]

PyTree = Any


def is_python_number(x: Any) -> bool:
    """Whether ``x`` is a concrete real number (Python or NumPy scalar), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_)
    )


def _is_integer(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


# ------------------------------------------------------------------ numbers


def check_positive(
    fn_name: str, name: str, value: Any, *, allow_zero: bool = False, allow_inf: bool = False
) -> None:
    """``value`` must be ``> 0`` (``>= 0`` with ``allow_zero``) and finite (unless ``allow_inf``).

    Checked only when ``value`` is a Python number; ``None`` and arrays pass.

    Raises:
      ValueError: for a Python number that is NaN, out of range, or infinite.
    """
    if not is_python_number(value):
        return
    in_range = value >= 0 if allow_zero else value > 0
    finite = allow_inf or math.isfinite(value)
    if not (in_range and finite) or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        what = bound if allow_inf else f"finite and {bound}"
        raise ValueError(f"{fn_name}: {name} must be {what}, got {value}")


def check_nonnegative(fn_name: str, name: str, value: Any) -> None:
    """``value`` must be finite and ``>= 0`` (when a Python number)."""
    check_positive(fn_name, name, value, allow_zero=True)


def check_in_range(
    fn_name: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_closed: bool = True,
    high_closed: bool = False,
) -> None:
    """``value`` must lie in the interval from ``low`` to ``high`` (when a Python number).

    ``low_closed``/``high_closed`` say whether the ends belong to it; the default is
    ``[low, high)``.

    Raises:
      ValueError: ``"{fn_name}: {name} must be in [low, high), got value"``.
    """
    if not is_python_number(value):
        return
    above = value >= low if low_closed else value > low
    below = value <= high if high_closed else value < high
    if not (above and below):
        interval = f"{'[' if low_closed else '('}{low}, {high}{']' if high_closed else ')'}"
        raise ValueError(f"{fn_name}: {name} must be in {interval}, got {value}")


def check_count(fn_name: str, name: str, value: Any, *, minimum: int = 1) -> None:
    """An iteration count: an integer ``>= minimum``; ``None`` and (traced) arrays pass.

    Raises:
      TypeError: for a ``bool`` or a ``float``.
      ValueError: for a Python integer below ``minimum``.
    """
    if value is None:
        return
    if isinstance(value, (bool, np.bool_, float, np.floating)):
        raise TypeError(f"{fn_name}: {name} must be an integer, got {value!r}")
    if _is_integer(value) and value < minimum:
        raise ValueError(f"{fn_name}: {name} must be >= {minimum}, got {value}")


def check_static_int(
    fn_name: str,
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    maximum_name: str | None = None,
) -> None:
    """A Python integer in ``[minimum, maximum]`` (it sets a shape or a Python loop).

    ``maximum_name`` names the upper bound in the message (``in [1, n] with n = 3``).

    Raises:
      TypeError: unless ``value`` is a Python (or NumPy) integer; a ``bool`` or an
        array is rejected.
      ValueError: outside the range.
    """
    if not _is_integer(value):
        raise TypeError(
            f"{fn_name}: {name} must be a Python int (it sets a shape), "
            f"got {type(value).__name__} {value!r}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is None:
            interval = f">= {minimum}"
        elif maximum_name is None:
            interval = f"in [{minimum}, {maximum}]"
        else:
            interval = f"in [{minimum}, {maximum_name}] with {maximum_name} = {maximum}"
        raise ValueError(f"{fn_name}: {name} must be {interval}, got {value}")


def check_choice(fn_name: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices`` (a build-time string option)."""
    if value not in choices:
        raise ValueError(
            f"{fn_name}: unknown {name} {value!r}; valid choices: "
            + ", ".join(repr(c) for c in choices)
        )


# ------------------------------------------------------------------ pytrees


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


def check_real_tree(fn_name: str, arg_name: str, tree: PyTree) -> None:
    """Real floating-point leaves only (the linalg solvers are for real symmetric operators)."""
    check_float_tree(fn_name, arg_name, tree)
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise TypeError(
                f"{fn_name}: {arg_name} has a complex leaf; only real floating-point "
                "pytrees are supported"
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


def is_concrete(tree: PyTree) -> bool:
    """Whether no leaf of ``tree`` is a tracer (its values can be read on the host)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def check_finite_tree(fn_name: str, name: str, tree: PyTree, hint: str = "") -> None:
    """Raise ``ValueError`` naming the leaf of a concrete ``tree`` that holds NaN or inf.

    A traced ``tree`` passes unchecked (its values are not known yet).
    """
    if not is_concrete(tree):
        return
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path)
            bad = int(np.sum(~np.isfinite(arr)))
            raise ValueError(
                f"{fn_name}: {name}{where} has {bad} non-finite value(s) of {arr.size}{hint}"
            )
