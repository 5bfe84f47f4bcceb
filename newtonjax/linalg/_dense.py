"""Dense symmetric solves that never return NaN: damped Cholesky and modified eigh.

Layer 2. For small problems (a dense Hessian in ``ravel_pytree`` order): a Newton
step needs ``(H + λI)^{-1} b`` with ``H + λI`` positive definite even when ``H`` is
indefinite or singular. Two strategies of Nocedal & Wright (2006) §3.4:

* :func:`damped_cholesky_solve` — Cholesky with an added multiple of the identity
  (N&W Alg. 3.3): try ``H + λI``, grow ``λ`` geometrically until the factorization
  exists.
* :func:`eigh_solve` — eigenvalue modification through ``jnp.linalg.eigh``: clip the
  eigenvalues at ``δ``, shift them all by the same amount, or take absolute values
  (the saddle-free Newton ``|H|`` of Dauphin et al. 2014).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax._checks import check_count, check_nonnegative, is_python_number
from newtonjax._tree import HIGHEST
from newtonjax.linalg._cg import SolverStatus
from newtonjax.linalg._operators import check_matrix_and_rhs, status_code, symmetrize

__all__ = [
    "DampedCholeskyResult",
    "damped_cholesky_solve",
    "EighSolveResult",
    "eigh_solve",
]

Array = jax.Array


# --------------------------------------------------------------------------- Cholesky


class DampedCholeskyResult(NamedTuple):
    """Result of :func:`damped_cholesky_solve`.

    Attributes:
      x: the solution of ``(H + damping I) x = b``, shaped like ``b``; zeros when no
        factorization succeeded (status not ``CONVERGED``).
      damping: the ``λ >= 0`` actually used (scalar).
      factor: lower-triangular ``L`` with ``L Lᵀ = H + damping I`` (zeros on failure),
        for reuse in further solves with ``jax.scipy.linalg.cho_solve((L, True), .)``.
      num_tries: int32, Cholesky factorizations attempted (1 if ``H + damping I`` was
        positive definite for the requested ``damping``).
      status: int32 :class:`SolverStatus`: ``CONVERGED``, ``MAX_STEPS`` (no try
        succeeded; in practice unreachable, see :func:`damped_cholesky_solve`) or
        ``NONFINITE`` (non-finite ``H`` or ``b``, or an overflowing solution).
    """

    x: Array
    damping: Array
    factor: Array
    num_tries: Array
    status: Array


def damped_cholesky_solve(
    H: Array,
    b: Array,
    *,
    damping: float | Array = 0.0,
    max_tries: int = 40,
    growth: float | Array = 10.0,
) -> DampedCholeskyResult:
    r"""Solve ``(H + λI) x = b`` with the smallest ``λ`` of a geometric sequence that works.

    Cholesky with added multiple of the identity (Nocedal & Wright 2006, Alg. 3.3):
    ``λ_0 = damping``; while the Cholesky factorization of ``H + λ_k I`` fails (a
    NaN in the factor), take

    .. math::

       λ_{k+1} = \min\bigl(\max(\text{growth}\,λ_k,\; β,\; -\min_i H_{ii} + β),\; λ_G\bigr),
       \qquad β = \sqrt{ε}\,‖H‖_F,

    where ``λ_G = max(0, max_i(Σ_{j≠i} |H_ij| - H_ii)) + β`` makes ``H + λ_G I``
    strictly diagonally dominant with a positive diagonal, hence positive definite
    (Gershgorin). The last allowed try uses at least ``λ_G``, so a finite ``H``
    always yields a finite solution. The tries run in a ``lax.while_loop``. ``H``
    is symmetrized, ``½(H + Hᵀ)``. For ``H = 0`` the scale is taken as 1.

    ``x`` is differentiable with respect to ``H``, ``b`` and ``damping`` through
    :func:`jax.lax.custom_linear_solve` (reusing the factor), with the extra shift
    found by the search held constant.

    Args:
      H: ``(n, n)`` symmetric matrix (a dense Hessian), real floating point.
      b: ``(n,)`` or ``(n, k)`` right-hand side(s).
      damping: the first (minimum) ``λ >= 0``. May be traced.
      max_tries: maximum number of factorizations (Python int >= 1, or traced).
      growth: factor ``> 1`` between consecutive ``λ``. May be traced.

    Returns:
      A :class:`DampedCholeskyResult` ``(x, damping, factor, num_tries, status)``.

    Raises:
      ValueError, TypeError: for a non-square ``H``, a ``b`` whose leading dimension
        differs, non-float dtypes, ``damping < 0``, ``growth <= 1``, ``max_tries < 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import damped_cholesky_solve
      >>> H = jnp.array([[2.0, 0.0], [0.0, -1.0]])  # indefinite
      >>> res = damped_cholesky_solve(H, jnp.array([1.0, 1.0]))
      >>> bool(res.damping > 1.0), bool(jnp.all(jnp.isfinite(res.x))), int(res.status)
      (True, True, 0)

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §3.4, Alg. 3.3.
    """
    fn = "damped_cholesky_solve"
    H, b = check_matrix_and_rhs(fn, H, b)
    check_nonnegative(fn, "damping", damping)
    check_count(fn, "max_tries", max_tries)
    if is_python_number(growth) and not growth > 1:
        raise ValueError(f"{fn}: growth must be > 1, got {growth}")
    dtype = H.dtype
    n = H.shape[0]
    eps = jnp.finfo(dtype).eps

    finite = jnp.all(jnp.isfinite(H)) & jnp.all(jnp.isfinite(b))
    H_sym = jnp.where(finite, symmetrize(H), jnp.zeros_like(H))
    b = jnp.where(finite, b, jnp.zeros_like(b))
    damping = jnp.asarray(damping, dtype)
    growth = jnp.asarray(growth, dtype)
    H = jax.lax.stop_gradient(H_sym)  # the search for λ is not differentiated

    h_norm = jnp.linalg.norm(H)
    beta = np.sqrt(eps) * jnp.where(h_norm > 0, h_norm, 1.0)
    diag = jnp.diagonal(H)
    off = jnp.sum(jnp.abs(H), axis=1) - jnp.abs(diag)
    lam_gershgorin = jnp.maximum(jnp.max(off - diag), 0.0) + beta
    lam_heuristic = jnp.maximum(beta, -jnp.min(diag) + beta)
    eye = jnp.eye(n, dtype=dtype)

    def factor(lam):
        L = jnp.linalg.cholesky(H + lam * eye)
        return L, jnp.all(jnp.isfinite(L))

    def cond(state):
        _, _, ok, k = state
        return (~ok) & (k < max_tries)

    def body(state):
        lam, _, _, k = state
        lam_next = jnp.minimum(jnp.maximum(growth * lam, lam_heuristic), lam_gershgorin)
        lam_next = jnp.where(k + 1 >= max_tries, jnp.maximum(lam_next, lam_gershgorin), lam_next)
        # Never go below the requested damping.
        lam_next = jnp.maximum(lam_next, damping)
        L, ok = factor(lam_next)
        return lam_next, L, ok, k + 1

    L0, ok0 = factor(damping)
    lam, L, ok, tries = jax.lax.while_loop(cond, body, (damping, L0, ok0, jnp.ones((), jnp.int32)))
    L = jnp.where(ok, L, jnp.zeros_like(L))
    L_solve = jnp.where(ok, L, eye)
    # Differentiable in H, b and damping by the implicit function theorem, with the
    # increase λ - damping found by the search held constant.
    lam_diff = damping + jax.lax.stop_gradient(jnp.maximum(lam, damping) - damping)
    x = jax.lax.custom_linear_solve(
        lambda v: jnp.matmul(H_sym, v, precision=HIGHEST) + lam_diff * v,
        b,
        lambda _, r: jax.scipy.linalg.cho_solve((L_solve, True), r),
        symmetric=True,
    )
    x_finite = jnp.all(jnp.isfinite(x))
    good = ok & finite & x_finite
    x = jnp.where(good, x, jnp.zeros_like(x))
    status = jnp.where(
        ~finite | (ok & ~x_finite),
        status_code(SolverStatus.NONFINITE),
        jnp.where(ok, status_code(SolverStatus.CONVERGED), status_code(SolverStatus.MAX_STEPS)),
    )
    return DampedCholeskyResult(
        x=x, damping=lam, factor=L, num_tries=tries, status=status.astype(jnp.int32)
    )


# --------------------------------------------------------------------------- eigh


class EighSolveResult(NamedTuple):
    """Result of :func:`eigh_solve`.

    Attributes:
      x: the solution ``V diag(1/μ) Vᵀ b``, shaped like ``b`` (zeros if non-finite).
      eigenvalues: ``(n,)`` eigenvalues ``λ_i`` of ``½(H + Hᵀ)``, ascending.
      modified_eigenvalues: ``(n,)`` the ``μ_i > 0`` used in the solve, in the same
        order as ``eigenvalues``.
      num_modified: int32, how many ``μ_i`` differ from ``λ_i``.
      status: int32 :class:`SolverStatus`: ``CONVERGED`` or ``NONFINITE``.
    """

    x: Array
    eigenvalues: Array
    modified_eigenvalues: Array
    num_modified: Array
    status: Array


_EIGH_MODES = ("clip", "shift", "abs")


def eigh_solve(
    H: Array,
    b: Array,
    *,
    min_eigenvalue: float | Array | None = None,
    mode: str = "clip",
) -> EighSolveResult:
    r"""Solve with a positive definite modification of ``H`` built from its eigenvalues.

    With ``H = V diag(λ) Vᵀ`` (``jnp.linalg.eigh`` of ``½(H + Hᵀ)``) and ``δ > 0``,
    returns ``x = V diag(1/μ) Vᵀ b`` where, by ``mode``:

    * ``"clip"``: ``μ_i = max(λ_i, δ)`` — eigenvalue modification (Nocedal & Wright
      2006, §3.4, eq. 3.40): the Newton step is kept along positive curvature and
      negative/small eigenvalues are raised to ``δ``.
    * ``"shift"``: ``μ_i = λ_i + τ`` with ``τ = max(0, δ - min_i λ_i)`` — the
      uniform shift ``H + τI`` (N&W §3.4, eq. 3.41), i.e. Levenberg–Marquardt-like
      damping with the smallest ``τ`` giving ``λ_min(H + τI) >= δ``.
    * ``"abs"``: ``μ_i = max(|λ_i|, δ)`` — the saddle-free Newton metric ``|H|`` of
      Dauphin et al. (2014), which turns directions of negative curvature into
      descent directions instead of ascent ones.

    ``x`` is differentiable with respect to ``H`` and ``b`` through
    :func:`jax.lax.custom_linear_solve`, with the modification
    ``V diag(μ - λ) Vᵀ`` held constant: exact wherever no eigenvalue is modified
    (and for ``"shift"`` at a fixed shift), and free of the NaN that differentiating
    ``eigh`` at repeated eigenvalues produces.

    Args:
      H: ``(n, n)`` symmetric real matrix.
      b: ``(n,)`` or ``(n, k)`` right-hand side(s).
      min_eigenvalue: ``δ``. ``None`` means ``sqrt(eps) · max_i |λ_i|`` (relative to
        the spectrum); an explicit value is absolute. In every case ``δ`` is raised to
        at least ``eps · max_i |λ_i|`` (and a tiny positive number), so the division is
        safe. May be traced.
      mode: ``"clip"``, ``"shift"`` or ``"abs"`` (static).

    Returns:
      An :class:`EighSolveResult` ``(x, eigenvalues, modified_eigenvalues,
      num_modified, status)``.

    Raises:
      ValueError, TypeError: for bad shapes or dtypes, an unknown ``mode`` or a
        negative ``min_eigenvalue``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import eigh_solve
      >>> H = jnp.diag(jnp.array([2.0, -4.0]))
      >>> res = eigh_solve(H, jnp.array([2.0, 2.0]), mode="abs")
      >>> print(res.x)
      [1.  0.5]
      >>> print(eigh_solve(H, jnp.array([2.0, 2.0]), min_eigenvalue=1.0).x)
      [1. 2.]

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §3.4.
      Dauphin et al. (2014), Identifying and attacking the saddle point problem in
      high-dimensional non-convex optimization, NeurIPS, §4 (saddle-free Newton).
    """
    fn = "eigh_solve"
    if mode not in _EIGH_MODES:
        raise ValueError(
            f"{fn}: unknown mode {mode!r}; valid choices: " + ", ".join(map(repr, _EIGH_MODES))
        )
    H, b = check_matrix_and_rhs(fn, H, b)
    check_nonnegative(fn, "min_eigenvalue", min_eigenvalue)
    dtype = H.dtype
    eps = jnp.finfo(dtype).eps
    finite = jnp.all(jnp.isfinite(H)) & jnp.all(jnp.isfinite(b))
    H = jnp.where(finite, H, jnp.zeros_like(H))
    b = jnp.where(finite, b, jnp.zeros_like(b))

    H_sym = symmetrize(H)
    lam, V = jnp.linalg.eigh(jax.lax.stop_gradient(H_sym))
    scale = jnp.max(jnp.abs(lam))
    if min_eigenvalue is None:
        delta = np.sqrt(eps) * scale
    else:
        delta = jnp.asarray(min_eigenvalue, dtype)
    delta = jnp.maximum(delta, jnp.maximum(eps * scale, jnp.finfo(dtype).tiny / eps))

    if mode == "clip":
        mu = jnp.maximum(lam, delta)
    elif mode == "shift":
        mu = lam + jnp.maximum(0.0, delta - lam[0])
    else:
        mu = jnp.maximum(jnp.abs(lam), delta)

    column = (lambda d: d) if b.ndim == 1 else (lambda d: d[:, None])

    def solve(_, r):
        coeffs = jnp.matmul(V.T, r, precision=HIGHEST)
        return jnp.matmul(V, coeffs / column(mu), precision=HIGHEST)

    def matvec(v):
        # H_mod v = H v + V diag(μ - λ) Vᵀ v, with the modification held constant.
        coeffs = column(mu - lam) * jnp.matmul(V.T, v, precision=HIGHEST)
        correction = jnp.matmul(V, coeffs, precision=HIGHEST)
        return jnp.matmul(H_sym, v, precision=HIGHEST) + correction

    x = jax.lax.custom_linear_solve(matvec, b, solve, symmetric=True)
    x_finite = jnp.all(jnp.isfinite(x))
    ok = finite & x_finite
    return EighSolveResult(
        x=jnp.where(ok, x, jnp.zeros_like(x)),
        eigenvalues=lam,
        modified_eigenvalues=mu,
        num_modified=jnp.sum(mu != lam).astype(jnp.int32),
        status=jnp.where(
            ok, status_code(SolverStatus.CONVERGED), status_code(SolverStatus.NONFINITE)
        ),
    )
