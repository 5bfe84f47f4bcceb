"""Conjugate gradients on pytree operators, and the status codes of the linalg layer.

Layer 2: imports only :mod:`newtonjax._tree`. An operator is any callable
``matvec(v) -> H v`` that maps a pytree to a pytree of the same structure and leaf
shapes; it is never materialized here.

This module also defines :class:`SolverStatus`, the status codes of every linalg
solver. Arguments are checked by :mod:`newtonjax._checks` (numeric hyperparameters
only when they are Python numbers, so traced values pass through); operators are
wrapped by :mod:`newtonjax.linalg._operators`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax._checks import check_count, check_nonnegative, check_real_tree, check_same_structure
from newtonjax._status import CODES, StatusEnum
from newtonjax._tree import (
    PyTree,
    tree_axpy,
    tree_norm,
    tree_size,
    tree_sub,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)
from newtonjax.linalg._operators import cast_like, real_dtype, status_code, wrap_operator

__all__ = ["SolverStatus", "CGResult", "cg"]

Array = jax.Array


class SolverStatus(StatusEnum):
    """Integer status codes returned (as int32 arrays) by every solver in ``linalg``.

    The codes work under ``jit``/``vmap``; ``SolverStatus(int(result.status))``
    reads one on the host, with its ``message``. They belong to the status family
    of :mod:`newtonjax._status`, shared with the solves' ``Status``.

    Attributes:
      CONVERGED: the tolerance was met (for trust-region solvers: the solution lies
        strictly inside the region, or the interior minimizer was found).
      MAX_STEPS: the step budget ran out first; the last iterate is returned.
      NEGATIVE_CURVATURE: a direction ``d`` with ``dᵀ H d <= 0`` was met.
      BOUNDARY: a trust-region solver stopped on the boundary ``‖p‖ = radius``.
      NONFINITE: a non-finite value appeared (in the inputs or an operator product);
        the last finite iterate is returned.
    """

    CONVERGED = CODES["CONVERGED"], "converged: the tolerance was met"
    MAX_STEPS = CODES["MAX_STEPS"], "stopped: the step budget ran out"
    NEGATIVE_CURVATURE = CODES["NEGATIVE_CURVATURE"], "stopped: negative curvature met"
    BOUNDARY = CODES["BOUNDARY"], "stopped: the trust-region boundary was reached"
    NONFINITE = CODES["NONFINITE"], "failed: a non-finite value appeared"


# --------------------------------------------------------------------------- CG


class CGResult(NamedTuple):
    """Result of :func:`cg`.

    Attributes:
      x: the solution, a pytree like ``b``.
      num_steps: int32, CG iterations run (operator products, not counting the
        initial residual ``b - A x0``); the iteration that detects negative curvature
        counts.
      residual_norm: ``‖r‖`` of the returned ``x`` as tracked by the CG recurrence
        (equal to ``‖b - A x‖`` up to rounding).
      status: int32 :class:`SolverStatus`: ``CONVERGED``, ``MAX_STEPS``,
        ``NEGATIVE_CURVATURE`` or ``NONFINITE``.
      negative_curvature: bool, ``status == NEGATIVE_CURVATURE``.
    """

    x: PyTree
    num_steps: Array
    residual_norm: Array
    status: Array
    negative_curvature: Array


def cg(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    x0: PyTree | None = None,
    rtol: float | Array | None = None,
    atol: float | Array = 0.0,
    max_steps: int | Array | None = None,
    preconditioner: Callable[[PyTree], PyTree] | None = None,
) -> CGResult:
    r"""Solve ``A x = b`` for a symmetric operator ``A`` by (preconditioned) CG.

    Iterates (Nocedal & Wright 2006, Alg. 5.3; Hestenes & Stiefel 1952)

    .. math::

       α_k = \frac{r_k^T z_k}{p_k^T A p_k},\quad x_{k+1} = x_k + α_k p_k,\quad
       r_{k+1} = r_k - α_k A p_k,\quad z_{k+1} = M^{-1} r_{k+1},\quad
       p_{k+1} = z_{k+1} + \frac{r_{k+1}^T z_{k+1}}{r_k^T z_k} p_k,

    from ``r_0 = b - A x_0``, ``z_0 = M^{-1} r_0``, ``p_0 = z_0``, and stops when
    ``‖r_k‖ <= max(rtol ‖b‖, atol)``, after ``max_steps`` iterations, or when
    ``p_kᵀ A p_k <= 0``.

    How it differs from :func:`jax.scipy.sparse.linalg.cg`:

    1. It returns a status (:class:`SolverStatus`), the number of steps and the
       residual norm instead of ``info=None``.
    2. It detects non-positive curvature ``pᵀ A p <= 0`` and stops with
       ``NEGATIVE_CURVATURE``, returning the last iterate *before* that direction
       (for ``x0=None`` and a first direction of negative curvature that is
       ``x = 0``; callers such as truncated Newton then fall back to the
       steepest-descent direction ``b`` themselves). It never divides by a
       non-positive curvature, so an indefinite operator gives no NaN.
    3. Inner products run at ``Precision.HIGHEST`` (``tree_vdot``), so float32
       recurrences on accelerators do not lose digits to reduced-precision dots.
    4. A non-finite operator product stops the iteration with ``NONFINITE`` and
       the last finite iterate, rather than propagating NaN.
    5. Tolerance defaults depend on the dtype (``rtol = sqrt(eps)``) and the test
       is ``‖r‖ <= max(rtol‖b‖, atol)``, not ``max(rtol‖b‖, atol)`` squared.
    6. ``matvec(b)`` is checked (by ``jax.eval_shape``) to return ``b``'s
       structure and shapes, and its leaves are cast to ``b``'s dtypes.

    Like :func:`jax.scipy.sparse.linalg.cg`, it is differentiable with respect to
    ``b`` and to arrays closed over by ``matvec``, through
    :func:`jax.lax.custom_linear_solve` (the implicit function theorem: one more CG
    solve with the cotangent, with the same tolerances) rather than through the loop.

    Args:
      matvec: the symmetric operator ``v -> A v`` on pytrees shaped like ``b``.
        Positive definite for a meaningful solution; negative curvature is
        detected and reported.
      b: the right-hand side, a pytree of real floating-point arrays.
      x0: initial guess (same structure as ``b``); zeros if ``None``.
      rtol: relative tolerance on ``‖r‖ / ‖b‖``; ``None`` means ``sqrt(eps)`` of
        ``b``'s dtype (1.5e-8 in float64, 3.5e-4 in float32). May be traced.
      atol: absolute tolerance on ``‖r‖``. May be traced.
      max_steps: iteration limit; ``None`` means ``10 n`` with ``n`` the number of
        unknowns. May be traced (it only bounds a ``while_loop``).
      preconditioner: optional symmetric positive definite ``r -> M^{-1} r``.

    Returns:
      A :class:`CGResult` ``(x, num_steps, residual_norm, status,
      negative_curvature)``.

    Raises:
      TypeError, ValueError: for a non-callable operator, non-float ``b``, an
        operator or ``x0`` whose structure differs from ``b``, or invalid Python
        numbers for the tolerances and ``max_steps``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import cg
      >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> res = cg(lambda v: A @ v, jnp.array([1.0, 2.0]))
      >>> print(jnp.round(res.x, 4), int(res.status), int(res.num_steps))
      [0.0909 0.6364] 0 2

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Alg. 5.2 and 5.3;
      §7.1 (negative-curvature exit in truncated Newton).
    """
    fn = "cg"
    check_real_tree(fn, "b", b)
    check_nonnegative(fn, "rtol", rtol)
    check_nonnegative(fn, "atol", atol)
    check_count(fn, "max_steps", max_steps)
    A = wrap_operator(fn, "matvec", matvec, b, "b")
    M = (
        None
        if preconditioner is None
        else wrap_operator(fn, "preconditioner", preconditioner, b, "b")
    )
    if x0 is not None:
        check_real_tree(fn, "x0", x0)
        check_same_structure(fn, "b", b, "x0", x0)
        x0 = cast_like(x0, b)

    dtype = real_dtype(b)
    if rtol is None:
        rtol = float(np.sqrt(np.finfo(dtype).eps))
    if max_steps is None:
        max_steps = 10 * tree_size(b)
    rtol = jnp.asarray(rtol, dtype)
    atol = jnp.asarray(atol, dtype)

    def solve(op, rhs):
        return _cg_loop(op, rhs, x0, M, rtol, atol, max_steps, dtype)

    # custom_linear_solve differentiates by the implicit function theorem (one more
    # CG solve with the cotangent), instead of through the while_loop.
    x, (k, r_norm, status) = jax.lax.custom_linear_solve(A, b, solve, symmetric=True, has_aux=True)
    return CGResult(
        x=x,
        num_steps=k,
        residual_norm=r_norm,
        status=status,
        negative_curvature=status == int(SolverStatus.NEGATIVE_CURVATURE),
    )


def _cg_loop(A, b, x0, M, rtol, atol, max_steps, dtype):
    """The CG iteration; returns ``(x, (num_steps, residual_norm, status))``."""
    b_norm = tree_norm(b).astype(dtype)
    tol = jnp.maximum(rtol * b_norm, atol)

    if x0 is None:
        x = tree_zeros_like(b)
        r = b
    else:
        x = x0
        r = tree_sub(b, A(x0))
    z = r if M is None else M(r)
    rz = tree_vdot(r, z).astype(dtype)
    r_norm = tree_norm(r).astype(dtype)
    running = jnp.asarray(-1, jnp.int32)
    finite0 = jnp.isfinite(rz) & jnp.isfinite(r_norm)
    flag = jnp.where(finite0, running, status_code(SolverStatus.NONFINITE))
    # Non-finite inputs: return zeros rather than propagate them.
    x = tree_where(finite0, x, tree_zeros_like(b))

    def cond(state):
        _, _, _, _, r_norm, k, flag = state
        return (flag == running) & (r_norm > tol) & (k < max_steps)

    def body(state):
        x, r, p, rz, r_norm, k, flag = state
        Ap = A(p)
        pAp = tree_vdot(p, Ap).astype(dtype)
        negative = pAp <= 0
        alpha = rz / jnp.where(negative, 1.0, pAp)
        x_new = tree_axpy(alpha, p, x)
        r_new = tree_axpy(-alpha, Ap, r)
        z_new = r_new if M is None else M(r_new)
        rz_new = tree_vdot(r_new, z_new).astype(dtype)
        r_norm_new = tree_norm(r_new).astype(dtype)
        nonfinite = ~(
            jnp.isfinite(pAp)
            & jnp.isfinite(rz_new)
            & jnp.isfinite(r_norm_new)
            & jnp.isfinite(alpha)
        )
        beta = rz_new / jnp.where(rz == 0, 1.0, rz)
        p_new = tree_axpy(beta, p, z_new)
        stop = negative | nonfinite
        new_flag = jnp.where(
            nonfinite,
            status_code(SolverStatus.NONFINITE),
            jnp.where(negative, status_code(SolverStatus.NEGATIVE_CURVATURE), running),
        )
        return (
            tree_where(stop, x, x_new),
            tree_where(stop, r, r_new),
            tree_where(stop, p, p_new),
            jnp.where(stop, rz, rz_new),
            jnp.where(stop, r_norm, r_norm_new),
            k + 1,
            new_flag,
        )

    state = (x, r, z, rz, r_norm, jnp.zeros((), jnp.int32), flag)
    x, _, _, _, r_norm, k, flag = jax.lax.while_loop(cond, body, state)
    status = jnp.where(
        flag != running,
        flag,
        jnp.where(
            r_norm <= tol, status_code(SolverStatus.CONVERGED), status_code(SolverStatus.MAX_STEPS)
        ),
    )
    return x, (k, r_norm, status)
