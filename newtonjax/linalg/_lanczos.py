r"""The Lanczos process on pytree operators, and eigenpairs of its tridiagonal matrix.

Layer 2. For a symmetric operator ``A`` and a start vector ``v``, ``m`` Lanczos steps
build an orthonormal basis ``Q_m`` of the Krylov space ``K_m(A, v)`` and the
tridiagonal ``T_m = Q_mᵀ A Q_m``; the eigenvalues of ``T_m`` (Ritz values)
approximate the extreme eigenvalues of ``A`` long before ``m = n`` (Golub & Van Loan
2013, §10.1; Saad 2011, §6.6). The spectrum layer builds top/bottom eigenvalues and
stochastic Lanczos quadrature on these two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax._checks import check_real_tree, check_static_int
from newtonjax._tree import HIGHEST, PyTree, tree_ravel
from newtonjax.linalg._operators import wrap_operator

__all__ = ["LanczosResult", "lanczos", "TridiagonalEigh", "tridiagonal_eigh"]

Array = jax.Array


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos` (``m = num_steps`` requested, ``k`` effective).

    Attributes:
      alphas: ``(m,)`` diagonal of ``T``; entries ``>= k`` are zero.
      betas: ``(m - 1,)`` off-diagonal of ``T``; entries ``>= k - 1`` are zero.
      basis: ``(m, n)`` the Lanczos vectors ``q_0, …, q_{m-1}`` as rows, raveled in
        ``jax.flatten_util.ravel_pytree(v0)`` order (unravel with the function that
        ``ravel_pytree(v0)`` returns); rows ``>= k`` are zero. Ritz vectors are
        ``basis.T @ eigenvectors`` (see :func:`tridiagonal_eigh`).
      num_steps: int32 ``k <= m``, the effective number of steps: smaller than ``m``
        after a breakdown (``β ≈ 0``: an invariant subspace was found, so the Ritz
        values of ``T_k`` are eigenvalues of ``A``), after a non-finite operator
        product (the last finite steps are kept), or 0 for a zero ``v0``.
      final_beta: ``β_k = ‖A q_{k-1} - α_{k-1} q_{k-1} - β_{k-1} q_{k-2}‖`` (after
        reorthogonalization), the residual norm that bounds the Ritz pairs:
        ``‖A y_i - θ_i y_i‖ = β_k |s_{k-1,i}|`` (Golub & Van Loan 2013, §10.1.4).
    """

    alphas: Array
    betas: Array
    basis: Array
    num_steps: Array
    final_beta: Array


def lanczos(
    matvec: Callable[[PyTree], PyTree],
    v0: PyTree,
    num_steps: int,
    *,
    reorthogonalize: bool = True,
) -> LanczosResult:
    r"""Run ``num_steps`` Lanczos steps with (optional) full reorthogonalization.

    From ``q_0 = v_0 / ‖v_0‖`` and ``β_{-1} q_{-1} = 0``:

    .. math::

       w = A q_j,\quad α_j = q_j^T w,\quad w \leftarrow w - α_j q_j - β_{j-1} q_{j-1},
       \quad β_j = ‖w‖,\quad q_{j+1} = w / β_j.

    With ``reorthogonalize=True`` (the default), ``w`` is additionally projected out
    of all previous Lanczos vectors by classical Gram–Schmidt applied twice ("twice is
    enough", Giraud et al. 2005), which keeps ``Q`` orthonormal to working precision
    and prevents spurious copies of converged Ritz values (Golub & Van Loan 2013,
    §10.3.1). Cost: ``m`` operator products plus ``O(m² n)`` flops, memory ``m n``.

    A breakdown ``β_j <= 10 sqrt(n) eps ‖T‖`` ends the process (no NaN): the
    remaining coefficients and basis rows are zero and ``num_steps`` reports the
    effective count. ``num_steps`` sets the output shapes, so it must be a Python int.

    Args:
      matvec: symmetric operator ``v -> A v`` on pytrees shaped like ``v0``.
      v0: nonzero start vector (pytree of real floats), e.g. a random normal draw.
      num_steps: ``m``, Python int with ``1 <= m <= n`` (static).
      reorthogonalize: full reorthogonalization (static).

    Returns:
      A :class:`LanczosResult` ``(alphas, betas, basis, num_steps, final_beta)``.

    Raises:
      TypeError, ValueError: for a non-callable operator, non-float ``v0``, an
        operator output of another structure, or ``num_steps`` not an int in
        ``[1, n]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import lanczos, tridiagonal_eigh
      >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
      >>> res = lanczos(lambda v: A @ v, jnp.ones(4), 4)
      >>> print(jnp.round(tridiagonal_eigh(res.alphas, res.betas).eigenvalues, 5))
      [1. 2. 3. 4.]

    References:
      Lanczos (1950). Golub & Van Loan (2013), Matrix Computations, 4th ed., §10.1,
      §10.3 (full reorthogonalization). Saad (2011), Numerical Methods for Large
      Eigenvalue Problems, 2nd ed., §6.6.
    """
    fn = "lanczos"
    check_real_tree(fn, "v0", v0)
    A = wrap_operator(fn, "matvec", matvec, v0, "v0")
    v, unravel = tree_ravel(v0)
    n = v.shape[0]
    check_static_int(fn, "num_steps", num_steps, minimum=1, maximum=n, maximum_name="n")
    m = int(num_steps)
    dtype = v.dtype
    eps = float(np.finfo(dtype).eps)
    breakdown_factor = 10.0 * np.sqrt(n) * eps

    def op(x):
        return tree_ravel(A(unravel(x)))[0].astype(dtype)

    def dot(a, b):
        return jnp.dot(a, b, precision=HIGHEST)

    norm0 = jnp.sqrt(dot(v, v))
    active0 = (norm0 > 0) & jnp.isfinite(norm0)
    q0 = jnp.where(active0, v / jnp.where(active0, norm0, 1.0), 0.0)

    def cond(state):
        j, *_, active, _ = state
        return active & (j < m)

    def body(state):
        j, Q, alphas, betas, q, q_prev, beta_prev, k, _, scale = state
        Q = Q.at[j].set(q)
        w = op(q)
        alpha = dot(q, w)
        w = w - alpha * q - beta_prev * q_prev
        if reorthogonalize:
            for _ in range(2):
                w = w - jnp.matmul(Q.T, jnp.matmul(Q, w, precision=HIGHEST), precision=HIGHEST)
        beta = jnp.sqrt(dot(w, w))
        finite = jnp.isfinite(alpha) & jnp.isfinite(beta)
        scale = jnp.where(finite, jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta)), scale)
        breakdown = beta <= breakdown_factor * scale
        active = finite & ~breakdown
        Q = Q.at[j].set(jnp.where(finite, q, 0.0))
        alphas = alphas.at[j].set(jnp.where(finite, alpha, 0.0))
        betas = betas.at[j].set(jnp.where(finite, beta, 0.0))
        k = jnp.where(finite, j + 1, j).astype(jnp.int32)
        q_next = jnp.where(active, w / jnp.where(active, beta, 1.0), 0.0)
        beta_next = jnp.where(active, beta, 0.0)
        return j + 1, Q, alphas, betas, q_next, q, beta_next, k, active, scale

    zero = jnp.zeros((), dtype)
    state = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((m, n), dtype),
        jnp.zeros((m,), dtype),
        jnp.zeros((m,), dtype),
        q0,
        jnp.zeros((n,), dtype),
        zero,
        jnp.zeros((), jnp.int32),
        active0,
        zero,
    )
    _, Q, alphas, betas_all, _, _, _, k, _, _ = jax.lax.while_loop(cond, body, state)
    final_beta = jnp.where(k > 0, betas_all[jnp.maximum(k - 1, 0)], 0.0)
    betas = jnp.where(jnp.arange(m - 1) < k - 1, betas_all[: m - 1], 0.0)
    return LanczosResult(alphas=alphas, betas=betas, basis=Q, num_steps=k, final_beta=final_beta)


class TridiagonalEigh(NamedTuple):
    """Result of :func:`tridiagonal_eigh` (``m`` = length of ``alphas``).

    Attributes:
      eigenvalues: ``(m,)`` Ritz values, ascending; the first ``k`` are those of the
        leading ``k × k`` block, the remaining ``m - k`` entries are zero padding.
      eigenvectors: ``(m, m)``, column ``i`` is the eigenvector of ``eigenvalues[i]``
        (zero for padding). ``eigenvectors[0, i]²`` are the Gauss quadrature weights
        of stochastic Lanczos quadrature (zero for padding).
      valid: ``(m,)`` bool, ``i < k``.
    """

    eigenvalues: Array
    eigenvectors: Array
    valid: Array


def tridiagonal_eigh(
    alphas: Array, betas: Array, num_steps: int | Array | None = None
) -> TridiagonalEigh:
    r"""Eigenpairs of the symmetric tridiagonal ``T`` with diagonal ``alphas``.

    ``T = diag(alphas) + diag(betas, 1) + diag(betas, -1)``, decomposed with
    ``jnp.linalg.eigh``. With ``num_steps = k`` (for instance ``LanczosResult.num_steps``
    after a breakdown; may be traced) only the leading ``k × k`` block is used: the
    trailing block is decoupled and moved above the Gershgorin bound of the leading
    one, so the first ``k`` eigenvalues are exactly those of ``T_k``; the rest are
    reported as zero with ``valid = False``.

    Args:
      alphas: ``(m,)`` diagonal.
      betas: ``(m - 1,)`` off-diagonal.
      num_steps: effective size ``k`` (``None``: ``m``).

    Returns:
      A :class:`TridiagonalEigh` ``(eigenvalues, eigenvectors, valid)``.

    Raises:
      ValueError: if the shapes do not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import tridiagonal_eigh
      >>> res = tridiagonal_eigh(jnp.array([2.0, 2.0]), jnp.array([1.0]))
      >>> print(res.eigenvalues)
      [1. 3.]

    References:
      Golub & Van Loan (2013), Matrix Computations, 4th ed., §8.4, §10.1.
    """
    fn = "tridiagonal_eigh"
    alphas = jnp.asarray(alphas)
    betas = jnp.asarray(betas)
    if alphas.ndim != 1 or alphas.shape[0] < 1:
        raise ValueError(f"{fn}: alphas must have shape (m,) with m >= 1, got {alphas.shape}")
    m = alphas.shape[0]
    if betas.shape != (m - 1,):
        raise ValueError(
            f"{fn}: betas must have shape (m - 1,) = ({m - 1},) for m = {m}, got {betas.shape}"
        )
    dtype = jnp.result_type(alphas, betas)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: alphas and betas must be real floating point, got {dtype}")
    alphas = alphas.astype(dtype)
    betas = betas.astype(dtype)
    idx = jnp.arange(m)
    if num_steps is None:
        valid = jnp.ones((m,), bool)
    else:
        k = jnp.asarray(num_steps)
        valid = idx < k
        betas = jnp.where(idx[:-1] < k - 1, betas, 0.0)
        padded_betas = jnp.concatenate([jnp.zeros((1,), dtype), jnp.abs(betas)])
        row_bound = (
            jnp.abs(alphas)
            + padded_betas
            + jnp.concatenate([jnp.abs(betas), jnp.zeros((1,), dtype)])
        )
        bound = jnp.max(jnp.where(valid, row_bound, 0.0))
        alphas = jnp.where(valid, alphas, bound + jnp.maximum(bound, 1.0))
    T = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
    evals, evecs = jnp.linalg.eigh(T)
    evals = jnp.where(valid, evals, 0.0)
    evecs = jnp.where(valid[None, :], evecs, 0.0)
    return TridiagonalEigh(eigenvalues=evals, eigenvectors=evecs, valid=valid)
