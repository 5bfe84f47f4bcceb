"""Critical-point classification from the Hessian's eigenvalues.

Layer 1. At a stationary point (∇f = 0) the second-order conditions decide
(Nocedal & Wright 2006, Thms. 2.3–2.4): all eigenvalues of ∇²f positive → strict
local minimum; all negative → strict local maximum; some of each sign → saddle; a
semi-definite Hessian with (numerically) zero eigenvalues → degenerate, where
second-order information cannot decide.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax._curvature import hessian_matrix
from newtonjax._tree import PyTree, tree_dtype, tree_max_abs

__all__ = [
    "CriticalPointKind",
    "CriticalPoint",
    "classify_critical_point",
    "critical_point_code",
]


class CriticalPointKind(enum.IntEnum):
    """Integer codes of :func:`critical_point_code` (jittable)."""

    MINIMUM = 0
    MAXIMUM = 1
    SADDLE = 2
    DEGENERATE = 3


class CriticalPoint(NamedTuple):
    """Result of :func:`classify_critical_point`.

    Attributes:
      kind: ``"minimum"``, ``"maximum"``, ``"saddle"`` or ``"degenerate"`` — the
        curvature class of the Hessian at the point.
      code: the same as a :class:`CriticalPointKind` integer array.
      eigenvalues: Hessian eigenvalues, ascending.
      grad_norm: ``‖∇f‖∞`` at the point.
      is_critical: whether ``grad_norm <= gtol`` (the point is stationary).
      tol: eigenvalues with ``|λ| <= tol`` count as zero.
      gtol: the gradient tolerance used.
    """

    kind: str | jax.Array
    code: jax.Array
    eigenvalues: jax.Array
    grad_norm: jax.Array
    is_critical: jax.Array
    tol: jax.Array
    gtol: jax.Array


def _analyze(f, x, args, kwargs, tol, gtol):
    hess = hessian_matrix(f, x, *args, **kwargs)
    grad = jax.grad(lambda p: f(p, *args, **kwargs))(x)
    eigenvalues = jnp.linalg.eigvalsh(hess)
    dtype = tree_dtype(x)
    eps = jnp.finfo(dtype).eps
    n = eigenvalues.shape[0]
    scale = jnp.max(jnp.abs(eigenvalues))
    # Eigenvalues of a symmetric matrix are computed to about n·eps·‖H‖ (Golub & Van
    # Loan 2013, §8.1); anything within a safety factor of that is treated as zero.
    tol = 100.0 * n * eps * scale if tol is None else jnp.asarray(tol, dtype)
    grad_norm = tree_max_abs(grad)
    gtol = (
        jnp.sqrt(eps) * jnp.maximum(1.0, jnp.abs(f(x, *args, **kwargs)))
        if gtol is None
        else (jnp.asarray(gtol, dtype))
    )
    positive = jnp.sum(eigenvalues > tol)
    negative = jnp.sum(eigenvalues < -tol)
    code = jnp.where(
        positive == n,
        CriticalPointKind.MINIMUM,
        jnp.where(
            negative == n,
            CriticalPointKind.MAXIMUM,
            jnp.where(
                (positive > 0) & (negative > 0),
                CriticalPointKind.SADDLE,
                CriticalPointKind.DEGENERATE,
            ),
        ),
    ).astype(jnp.int32)
    return code, eigenvalues, grad_norm, grad_norm <= gtol, tol, gtol


def critical_point_code(
    f: Callable[..., jax.Array],
    x: PyTree,
    *args: Any,
    tol: float | jax.Array | None = None,
    gtol: float | jax.Array | None = None,
    **kwargs: Any,
) -> CriticalPoint:
    """Jittable :func:`classify_critical_point`: ``kind`` is the integer code."""
    code, *rest = _analyze(f, x, args, kwargs, tol, gtol)
    return CriticalPoint(code, code, *rest)


def classify_critical_point(
    f: Callable[..., jax.Array],
    x: PyTree,
    *args: Any,
    tol: float | None = None,
    gtol: float | None = None,
    **kwargs: Any,
) -> CriticalPoint:
    """Classify ``x`` as a minimum, maximum, saddle or degenerate point of ``f``.

    The dense Hessian is formed (small problems); its eigenvalues decide. The
    gradient is reported alongside: ``is_critical`` says whether ``x`` is stationary
    to ``gtol``; ``kind`` describes the curvature either way.

    Args:
      f: scalar objective ``f(x, *args, **kwargs)``.
      x: the point, any pytree of float arrays.
      *args: extra positional arguments of ``f``.
      tol: eigenvalues with ``|λ| <= tol`` count as zero; default
        ``100·n·eps·max|λ|``.
      gtol: stationarity tolerance on ``‖∇f‖∞``; default ``sqrt(eps)·max(1, |f|)``.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      A :class:`CriticalPoint` whose ``kind`` is a Python string (use
      :func:`critical_point_code` under ``jit``/``vmap``).

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> f = lambda w: w[0] ** 2 + w[0] * w[1] - w[1] ** 2
      >>> nj.classify_critical_point(f, jnp.zeros(2)).kind
      'saddle'

    References:
      Nocedal & Wright (2006), Numerical Optimization, §2.1, Thms. 2.3–2.4.
    """
    result = critical_point_code(f, x, *args, tol=tol, gtol=gtol, **kwargs)
    if isinstance(result.code, jax.core.Tracer):
        raise TypeError(
            "classify_critical_point returns a string and cannot run under jit/vmap; "
            "use nj.critical_point_code there"
        )
    kind = CriticalPointKind(int(result.code)).name.lower()
    return result._replace(kind=kind)
