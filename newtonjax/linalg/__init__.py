"""Linear algebra on curvature operators (layer 2).

Operators are callables ``matvec(v) -> H v`` on pytrees (any structure, float32 or
float64); dense routines take an ``(n, n)`` matrix in ``ravel_pytree`` order. Every
function is pure, works under ``jax.jit`` and ``jax.vmap``, never returns NaN for a
singular or indefinite operator, and reports what happened through an int32
:class:`SolverStatus` code.

* Linear systems: :func:`cg` (with negative-curvature detection).
* Trust-region subproblems (descent step ``p``, ``predicted_reduction >= 0``):
  :func:`steihaug_cg`, :func:`cauchy_point`, :func:`dogleg`,
  :func:`trust_region_exact` (dense, Moré–Sorensen with the hard case).
* Dense modified Newton solves: :func:`damped_cholesky_solve`, :func:`eigh_solve`
  (eigenvalue clip / shift / saddle-free ``|H|``).
* Damped PSD systems ``(G + μD) x = b`` for many ``μ`` from one spectrum:
  :func:`damped_spectral_solve` (SVD of ``J`` for ``G = JᵀJ``, or ``eigh``).
* Spectra: :func:`lanczos` (full reorthogonalization), :func:`tridiagonal_eigh`;
  :func:`small_svd` (QR + one-sided Jacobi) for batches of small tall matrices.
"""

from newtonjax.linalg._cg import CGResult, SolverStatus, cg
from newtonjax.linalg._dense import (
    DampedCholeskyResult,
    EighSolveResult,
    damped_cholesky_solve,
    eigh_solve,
)
from newtonjax.linalg._lanczos import LanczosResult, TridiagonalEigh, lanczos, tridiagonal_eigh
from newtonjax.linalg._spectral import DampedSpectralSolve, damped_spectral_solve
from newtonjax.linalg._svd import SMALL_SVD_MAX_COLUMNS, SmallSVDResult, small_svd
from newtonjax.linalg._trust_subproblem import (
    SteihaugResult,
    TrustRegionExactResult,
    TrustRegionStepResult,
    cauchy_point,
    dogleg,
    steihaug_cg,
    trust_region_exact,
)

__all__ = [
    "SolverStatus",
    # linear systems
    "CGResult",
    "cg",
    # trust-region subproblems
    "SteihaugResult",
    "steihaug_cg",
    "TrustRegionStepResult",
    "cauchy_point",
    "dogleg",
    "TrustRegionExactResult",
    "trust_region_exact",
    # dense solves
    "DampedCholeskyResult",
    "damped_cholesky_solve",
    "EighSolveResult",
    "eigh_solve",
    # damped PSD systems through one spectrum
    "DampedSpectralSolve",
    "damped_spectral_solve",
    # small dense SVD
    "SMALL_SVD_MAX_COLUMNS",
    "SmallSVDResult",
    "small_svd",
    # Lanczos
    "LanczosResult",
    "lanczos",
    "TridiagonalEigh",
    "tridiagonal_eigh",
]
