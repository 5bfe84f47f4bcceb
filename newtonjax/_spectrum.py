"""Spectral estimates of the Hessian: extreme eigenvalues, trace, spectral density.

Layer 3 (curvature operators + Lanczos). Every estimate uses only Hessian-vector
products from one linearized gradient, so it scales to models where the Hessian
cannot be stored; randomness always comes from an explicit ``key``.

* :func:`hessian_eigenvalues` — Lanczos with full reorthogonalization; the extreme
  Ritz values converge first (Kaniel–Paige theory, Saad 2011 §6.6).
* :func:`hessian_trace` — Hutchinson's estimator ``E[zᵀHz] = tr H`` with Rademacher
  probes (Hutchinson 1990; Avron & Toledo 2011).
* :func:`hessian_spectral_density` — stochastic Lanczos quadrature: each probe's
  Lanczos tridiagonal gives Gauss quadrature nodes and weights of the spectral
  measure (Golub & Meurant 2010; Ubaru, Chen & Saad 2017), smoothed by Gaussians,
  as in PyHessian (Yao et al. 2020) and Ghorbani, Krishnan & Xiao (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from newtonjax import linalg
from newtonjax._curvature import hessian_operator
from newtonjax._tree import PyTree, tree_ravel, tree_size

__all__ = [
    "hessian_eigenvalues",
    "hessian_trace",
    "SpectralDensity",
    "hessian_spectral_density",
]

WHICH = ("largest", "smallest", "magnitude")


def _require_key(fn_name: str, key: Any) -> None:
    if key is None:
        raise TypeError(
            f"{fn_name}: a PRNG key is required (key=jax.random.PRNGKey(0)); "
            "the estimate is random and newtonjax never picks a seed for you"
        )


def _flat_operator(f, params, args, kwargs):
    op = hessian_operator(f, params, *args, **kwargs)
    flat, unravel = tree_ravel(params)

    def matvec(x):
        return tree_ravel(op.matvec(unravel(x)))[0]

    return matvec, flat, unravel


def hessian_eigenvalues(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    k: int = 1,
    which: str = "largest",
    key: jax.Array | None = None,
    num_steps: int | None = None,
    return_eigenvectors: bool = False,
    **kwargs: Any,
) -> jax.Array | tuple[jax.Array, PyTree]:
    """The ``k`` largest, smallest or largest-magnitude Hessian eigenvalues by Lanczos.

    Args:
      f: scalar objective ``f(params, *args, **kwargs)``.
      params: the point θ.
      *args: extra positional arguments of ``f``.
      k: number of eigenvalues (static).
      which: ``"largest"`` / ``"smallest"`` (algebraic) or ``"magnitude"``.
      key: PRNG key for the random start vector (required).
      num_steps: Lanczos steps ``m`` (static), default ``min(n, max(4k, 40))``;
        more steps sharpen interior Ritz values, ``m = n`` is exact.
      return_eigenvectors: also return the Ritz vectors.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      The ``k`` eigenvalues sorted descending, and with ``return_eigenvectors`` a
      pytree like ``params`` whose leaves carry a leading axis of size ``k`` (row
      ``i`` is the unit eigenvector of value ``i``). If the Krylov space is exhausted
      before ``k`` values are found (an exact invariant subspace), the missing
      entries are 0.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import newtonjax as nj
      >>> f = lambda w: jnp.sum(jnp.arange(1.0, 6.0) * w**2)
      >>> top = nj.hessian_eigenvalues(f, jnp.ones(5), k=2, key=jax.random.PRNGKey(0))
      >>> print(jnp.round(top, 4))
      [10.  8.]

    References:
      Golub & Van Loan (2013), Matrix Computations, §10.1–10.3;
      Saad (2011), Numerical Methods for Large Eigenvalue Problems, §6.6.
    """
    fn_name = "hessian_eigenvalues"
    _require_key(fn_name, key)
    if which not in WHICH:
        raise ValueError(
            f"{fn_name}: unknown which {which!r}; valid choices: " + ", ".join(map(repr, WHICH))
        )
    n = tree_size(params)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"{fn_name}: k must be an int in [1, n] with n = {n}, got {k!r}")
    m = min(n, max(4 * k, 40)) if num_steps is None else num_steps
    if not isinstance(m, int) or not k <= m <= n:
        raise ValueError(f"{fn_name}: num_steps must be an int in [k, n] = [{k}, {n}], got {m!r}")

    def estimate(params, key):
        matvec, flat, unravel = _flat_operator(f, params, args, kwargs)
        return _top_ritz_pairs(matvec, flat, unravel, key, k, which, m, return_eigenvectors)

    return jax.jit(estimate)(params, key)


def _top_ritz_pairs(matvec, flat, unravel, key, k, which, m, return_eigenvectors):
    """The ``k`` Ritz values (and vectors) chosen by ``which`` after ``m`` Lanczos steps."""
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    result = linalg.lanczos(matvec, v0, m)
    tri = linalg.tridiagonal_eigh(result.alphas, result.betas, result.num_steps)
    theta = tri.eigenvalues
    if which == "largest":
        score = theta
    elif which == "smallest":
        score = -theta
    else:
        score = jnp.abs(theta)
    # Invalid (padding) Ritz values must never be chosen.
    score = jnp.where(tri.valid, score, -jnp.inf)
    _, idx = jax.lax.top_k(score, k)
    values = jnp.where(tri.valid[idx], theta[idx], 0.0)
    order = jnp.argsort(-values)
    values, idx = values[order], idx[order]
    if not return_eigenvectors:
        return values
    ritz = result.basis.T @ tri.eigenvectors[:, idx]  # (n, k)
    vectors = jax.vmap(unravel, in_axes=1)(ritz)
    return values, vectors


def hessian_trace(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array | None = None,
    num_samples: int = 100,
    batch_size: int | None = 16,
    **kwargs: Any,
) -> jax.Array:
    """Hutchinson's estimate of ``tr ∇²f(θ)`` from ``num_samples`` Rademacher probes.

    ``tr H = E[zᵀHz]`` for ``z`` with independent ±1 entries; the variance of one
    sample is ``2 Σ_{i≠j} H_ij²`` (Hutchinson 1990), so a diagonal Hessian's trace
    is exact with a single probe.

    Args:
      f: scalar objective.
      params: the point θ.
      *args: extra positional arguments of ``f``.
      key: PRNG key (required).
      num_samples: number of probes (static).
      batch_size: probes evaluated together.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      The scalar estimate.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import newtonjax as nj
      >>> f = lambda w: jnp.sum(jnp.arange(1.0, 4.0) * w**2)
      >>> nj.hessian_trace(f, jnp.ones(3), key=jax.random.PRNGKey(0), num_samples=2)
      Array(12., dtype=float32)

    References:
      Hutchinson (1990); Avron & Toledo (2011), J. ACM 58(2).
    """
    fn_name = "hessian_trace"
    _require_key(fn_name, key)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{fn_name}: num_samples must be an int >= 1, got {num_samples!r}")

    def estimate(params, key):
        matvec, flat, _ = _flat_operator(f, params, args, kwargs)

        def sample(k):
            z = jax.random.rademacher(k, flat.shape, dtype=flat.dtype)
            return jnp.vdot(z, matvec(z), precision=jax.lax.Precision.HIGHEST)

        keys = jax.random.split(key, num_samples)
        return jnp.mean(jax.lax.map(sample, keys, batch_size=batch_size))

    return jax.jit(estimate)(params, key)


class SpectralDensity(NamedTuple):
    """Result of :func:`hessian_spectral_density`.

    Attributes:
      grid: ``(num_points,)`` eigenvalue axis.
      density: ``(num_points,)`` smoothed density of the normalized spectral measure
        (integrates to 1; ``n · density`` counts eigenvalues per unit).
      nodes: ``(num_probes, num_steps)`` Ritz values of each probe (quadrature nodes).
      weights: ``(num_probes, num_steps)`` Gauss quadrature weights (each row sums
        to 1; zero for padding after an early breakdown).
      sigma: the Gaussian smoothing width used.
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array
    sigma: jax.Array


def hessian_spectral_density(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array | None = None,
    num_probes: int = 8,
    num_steps: int | None = None,
    num_points: int = 1000,
    sigma: float | jax.Array | None = None,
    **kwargs: Any,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of the Hessian eigenvalue density.

    For each of ``num_probes`` Rademacher probes ``v`` (normalized), ``m`` Lanczos
    steps give ``T = S Θ Sᵀ``; the nodes ``θ_i`` and weights ``S_{0i}²`` form a
    Gauss rule exact for ``vᵀ p(H) v`` with ``deg p ≤ 2m − 1``. Averaging the rules
    over probes estimates the spectral measure ``(1/n) Σ_j δ(t − λ_j)``, which is
    smoothed with Gaussians of width ``sigma``.

    Args:
      f: scalar objective.
      params: the point θ.
      *args: extra positional arguments of ``f``.
      key: PRNG key (required).
      num_probes: number of probe vectors (static).
      num_steps: Lanczos steps per probe (static), default ``min(n, 80)``.
      num_points: grid size (static).
      sigma: smoothing width; default 1% of the spread of the nodes.
      **kwargs: extra keyword arguments of ``f``.

    Returns:
      A :class:`SpectralDensity`.

    References:
      Ubaru, Chen & Saad (2017), SIAM J. Matrix Anal. Appl. 38(4), §3;
      Ghorbani, Krishnan & Xiao (2019), ICML, §2;
      Yao, Gholami, Keutzer & Mahoney (2020), PyHessian, §3.3.
    """
    fn_name = "hessian_spectral_density"
    _require_key(fn_name, key)
    for name, value in (("num_probes", num_probes), ("num_points", num_points)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{fn_name}: {name} must be an int >= 1, got {value!r}")
    n = tree_size(params)
    m = min(n, 80) if num_steps is None else num_steps
    if not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"{fn_name}: num_steps must be an int in [1, n = {n}], got {m!r}")

    def estimate(params, key, sigma):
        matvec, flat, _ = _flat_operator(f, params, args, kwargs)
        nodes, weights, valid = _quadrature_rules(matvec, flat, key, num_probes, m)
        return _smoothed_density(nodes, weights, valid, sigma, num_points, flat.dtype)

    return jax.jit(estimate)(params, key, sigma)


def _quadrature_rules(matvec, flat, key, num_probes, m):
    """Gauss nodes, weights and validity masks of ``num_probes`` Rademacher probes."""

    def probe(k):
        v0 = jax.random.rademacher(k, flat.shape, dtype=flat.dtype)
        result = linalg.lanczos(matvec, v0, m)
        tri = linalg.tridiagonal_eigh(result.alphas, result.betas, result.num_steps)
        weights = jnp.where(tri.valid, tri.eigenvectors[0, :] ** 2, 0.0)
        return jnp.where(tri.valid, tri.eigenvalues, 0.0), weights, tri.valid

    return jax.lax.map(probe, jax.random.split(key, num_probes))


def _smoothed_density(nodes, weights, valid, sigma, num_points, dtype):
    """Gaussian-smoothed average of the probes' quadrature rules on a grid."""
    num_probes = nodes.shape[0]
    lo = jnp.min(jnp.where(valid, nodes, jnp.inf))
    hi = jnp.max(jnp.where(valid, nodes, -jnp.inf))
    spread = jnp.where(hi > lo, hi - lo, jnp.maximum(jnp.abs(hi), 1.0))
    sigma = 0.01 * spread if sigma is None else jnp.asarray(sigma, dtype)
    grid = jnp.linspace(lo - 5.0 * sigma, hi + 5.0 * sigma, num_points)
    gauss = jnp.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2)
    gauss = gauss / (sigma * jnp.sqrt(2.0 * jnp.pi))
    density = jnp.sum(gauss * weights[None], axis=(1, 2)) / num_probes
    return SpectralDensity(grid, density, nodes, weights, jnp.asarray(sigma, dtype))
