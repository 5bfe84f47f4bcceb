r"""Damped symmetric positive semi-definite systems solved through one spectrum.

Layer 2. For ``G = JᵀJ`` (given the ``m × n`` matrix ``J``) or a PSD matrix ``G``, a
diagonal scaling ``D > 0`` and a family of dampings ``μ ≥ 0``,

.. math::

   (G + μD)\,x = b, \qquad
   x = D^{-1/2} V \operatorname{diag}\!\Big(\frac{1}{λ + μ}\Big) V^T D^{-1/2} b,

where ``Ĝ = D^{-1/2} G D^{-1/2} = V diag(λ) Vᵀ``. One decomposition serves every
``μ`` and every right-hand side: this is how Levenberg–Marquardt solves its damped
system for several dampings (the secular equation of its trust region, Moré 1978
§5) and a second right-hand side (the geodesic acceleration) at the cost of one
factorization.

``Ĝ = ĴᵀĴ`` comes from the thin SVD of the column-scaled ``Ĵ = J D^{-1/2}``, so the
eigenvalues ``s²`` never square ``Ĵ``'s condition number; a singular value below
``lstsq``'s cutoff ``eps · max(m, n) · s_max`` counts as 0 (Golub & Van Loan 2013,
§5.5.8). A matrix ``Ĝ`` is decomposed by ``eigh`` (its negative eigenvalues are
rounding) with the cutoff ``n · eps · λ_max``. A zero eigenvalue is then damped by
``μ``, and left out only where ``λ + μ = 0``: the undamped solve is the minimum-norm
least-squares solution, exactly as ``lstsq``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from newtonjax._tree import HIGHEST, tree_all_finite
from newtonjax.linalg._svd import SMALL_SVD_MAX_COLUMNS, small_svd

__all__ = ["DampedSpectralSolve", "damped_spectral_solve", "shifted_inverse"]

Array = jax.Array


def shifted_inverse(values: Array, damping: Array) -> Array:
    """``1 / (λ + μ)``, and 0 where ``λ + μ = 0`` (the pseudo-inverse of an undamped solve)."""
    shifted = values + damping
    keep = shifted > 0
    return jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0)


class DampedSpectralSolve(NamedTuple):
    """``(G + μD)⁻¹`` for every ``μ`` from the spectrum of ``Ĝ = D^{-1/2} G D^{-1/2}``.

    Built by :func:`damped_spectral_solve` for a right-hand side ``g``, whose
    coordinates it keeps, so that :meth:`step` and :meth:`step_length` cost ``O(n)``
    and one ``n × n`` product per damping. A NamedTuple, hence a pytree: it passes
    through ``jit``, ``vmap`` and ``lax`` control flow.

    Attributes:
      values: ``(n,)`` eigenvalues ``λ ≥ 0`` of ``Ĝ``; those below the rank cutoff
        are exactly 0.
      vectors: ``(n, n)`` orthonormal eigenvectors ``V``, one per column.
      inv_sqrt_scale: ``(n,)`` ``D^{-1/2}``, or ``None`` for ``D = I``.
      coefficients: ``(n,)`` ``c = Vᵀ D^{-1/2} g``.
    """

    values: Array
    vectors: Array
    inv_sqrt_scale: Array | None
    coefficients: Array

    def coordinates(self, b: Array) -> Array:
        """``Vᵀ D^{-1/2} b``: a right-hand side in the eigenbasis of ``Ĝ``."""
        b_hat = b if self.inv_sqrt_scale is None else b * self.inv_sqrt_scale
        return jnp.matmul(self.vectors.T, b_hat, precision=HIGHEST)

    def from_coordinates(self, coef: Array) -> Array:
        """``x = D^{-1/2} V coef`` (all zeros if any entry is not finite)."""
        x = jnp.matmul(self.vectors, coef, precision=HIGHEST)
        if self.inv_sqrt_scale is not None:
            x = x * self.inv_sqrt_scale
        return jnp.where(tree_all_finite(x), x, jnp.zeros_like(x))

    def solve(self, b: Array, damping: Array) -> tuple[Array, Array]:
        """``x = (G + μD)⁺ b`` and its scaled length ``‖D^{1/2} x‖``."""
        coef = shifted_inverse(self.values, damping) * self.coordinates(b)
        return self.from_coordinates(coef), jnp.linalg.norm(coef)

    def step(self, damping: Array) -> tuple[Array, Array]:
        """:meth:`solve` for the stored right-hand side ``g`` (no product with ``Vᵀ``)."""
        coef = shifted_inverse(self.values, damping) * self.coefficients
        return self.from_coordinates(coef), jnp.linalg.norm(coef)

    def step_length(self, damping: Array) -> Array:
        """``φ(μ) = ‖D^{1/2} (G + μD)⁺ g‖ = ‖c / (λ + μ)‖``, non-increasing in ``μ``."""
        return jnp.linalg.norm(shifted_inverse(self.values, damping) * self.coefficients)

    def drops_directions(self, damping: Array) -> Array:
        """Whether ``λ + μ = 0`` somewhere: the solve is then a pseudo-inverse."""
        return jnp.any(shifted_inverse(self.values, damping) == 0)


def _spectrum_of_gram(jacobian: Array) -> tuple[Array, Array]:
    """Eigenpairs of ``ĴᵀĴ`` from the SVD of ``Ĵ`` (``m × n``), rank cutoff applied."""
    eps = jnp.finfo(jacobian.dtype).eps
    m, n = jacobian.shape
    if m >= n and n <= SMALL_SVD_MAX_COLUMNS:
        # A few parameters: QR + Jacobi, as accurate and faster in batches.
        s, v, _ = small_svd(jacobian)
    else:
        # Thin SVD; for a wide Jacobian (m < n) the full V spans the null space too.
        _, s, vh = jnp.linalg.svd(jacobian, full_matrices=m < n)
        v = vh.T
    s_max = jnp.max(s) if s.shape[0] else jnp.zeros((), jacobian.dtype)
    s = jnp.where(s > eps * max(m, n) * s_max, s, 0.0)
    values = jnp.zeros((n,), jacobian.dtype).at[: s.shape[0]].set(s * s)
    return values, v


def _spectrum_of_matrix(matrix: Array) -> tuple[Array, Array]:
    """Eigenpairs of a PSD ``n × n`` matrix by ``eigh``, rank cutoff applied."""
    eps = jnp.finfo(matrix.dtype).eps
    n = matrix.shape[0]
    values, vectors = jnp.linalg.eigh(matrix)
    values = jnp.maximum(values, 0.0)
    values = jnp.where(values > n * eps * jnp.max(values), values, 0.0)
    return values, vectors


def damped_spectral_solve(
    rhs: Array,
    *,
    jacobian: Array | None = None,
    matrix: Array | None = None,
    inv_sqrt_scale: Array | None = None,
) -> DampedSpectralSolve:
    """Decompose ``Ĝ = D^{-1/2} G D^{-1/2}`` once, for the right-hand side ``rhs``.

    Exactly one of ``jacobian`` (``G = JᵀJ``, never formed) and ``matrix`` (``G``
    itself, symmetric PSD) is given.

    Args:
      rhs: ``(n,)`` right-hand side ``g``.
      jacobian: ``(m, n)`` matrix ``J``.
      matrix: ``(n, n)`` symmetric PSD ``G``.
      inv_sqrt_scale: ``(n,)`` positive ``D^{-1/2}``; ``None`` for ``D = I``.

    Returns:
      A :class:`DampedSpectralSolve`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from newtonjax.linalg import damped_spectral_solve
      >>> J = jnp.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
      >>> solve = damped_spectral_solve(J.T @ jnp.array([1.0, 3.0, 5.0]), jacobian=J)
      >>> x, _ = solve.step(0.0)  # the least-squares solution of J x = y
      >>> print(jnp.round(x, 4))
      [1. 2.]

    References:
      Moré (1978), "The Levenberg–Marquardt algorithm: implementation and theory",
      §§3, 5; Golub & Van Loan (2013), Matrix Computations, 4th ed., §5.5.
    """
    if (jacobian is None) == (matrix is None):
        raise ValueError("damped_spectral_solve: give exactly one of jacobian and matrix")
    if jacobian is not None:
        scaled = jacobian if inv_sqrt_scale is None else jacobian * inv_sqrt_scale[None, :]
        values, vectors = _spectrum_of_gram(scaled)
    else:
        scaled = matrix
        if inv_sqrt_scale is not None:
            scaled = matrix * jnp.outer(inv_sqrt_scale, inv_sqrt_scale)
        values, vectors = _spectrum_of_matrix(scaled)
    partial = DampedSpectralSolve(values, vectors, inv_sqrt_scale, jnp.zeros_like(values))
    return partial._replace(coefficients=partial.coordinates(rhs))
