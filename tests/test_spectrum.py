"""Spectral estimates against numpy.linalg.eigh and exact traces/moments."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import newtonjax as nj

KEY = jax.random.PRNGKey(0)


def make_problem(n=30, seed=0):
    """An indefinite quartic-plus-quadratic objective on a two-leaf pytree."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a = jnp.asarray((a + a.T) / 2.0)

    def f(p):
        w = jnp.concatenate([p["u"], p["v"].ravel()])
        return 0.5 * w @ a @ w + 0.1 * jnp.sum(w**4)

    params = {
        "u": jnp.asarray(rng.standard_normal(n - 6)),
        "v": jnp.asarray(rng.standard_normal((2, 3))),
    }
    flat, unravel = ravel_pytree(params)
    hess = np.asarray(jax.hessian(lambda x: f(unravel(x)))(flat))
    return f, params, hess


class TestEigenvalues(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_full_krylov_space_is_exact(self):
        f, params, hess = make_problem()
        want = np.linalg.eigvalsh(hess)
        got = self.variant(lambda p: nj.hessian_eigenvalues(f, p, k=30, key=KEY, num_steps=30))(
            params
        )
        np.testing.assert_allclose(got, want[::-1], rtol=1e-10, atol=1e-10)

    def test_eigenvectors(self):
        f, params, hess = make_problem(n=20, seed=2)
        values, vectors = nj.hessian_eigenvalues(
            f, params, k=2, key=KEY, num_steps=20, return_eigenvectors=True
        )
        flat_vectors = jax.vmap(lambda t: ravel_pytree(t)[0])(vectors)
        for value, vec in zip(values, flat_vectors, strict=True):
            np.testing.assert_allclose(hess @ vec, value * vec, atol=1e-9)
            np.testing.assert_allclose(np.linalg.norm(vec), 1.0, rtol=1e-12)

    def test_needs_key_and_valid_which(self):
        f, params, _ = make_problem(n=10)
        with pytest.raises(TypeError, match="key"):
            nj.hessian_eigenvalues(f, params, k=2)
        with pytest.raises(ValueError, match="which"):
            nj.hessian_eigenvalues(f, params, k=2, which="top", key=KEY)
        with pytest.raises(ValueError, match="k must be"):
            nj.hessian_eigenvalues(f, params, k=0, key=KEY)

    def test_vmap_over_keys(self):
        f, params, hess = make_problem(n=12, seed=3)
        got = jax.vmap(lambda k: nj.hessian_eigenvalues(f, params, k=1, key=k, num_steps=12))(
            jax.random.split(KEY, 3)
        )
        np.testing.assert_allclose(got[:, 0], np.max(np.linalg.eigvalsh(hess)), rtol=1e-10)

    def test_float32_smoke(self):
        f, params, hess = make_problem(n=20, seed=4)
        params32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
        got = nj.hessian_eigenvalues(f, params32, k=1, key=KEY, num_steps=20)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got[0], np.max(np.linalg.eigvalsh(hess)), rtol=1e-4)


class TestExtremes:
    @pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
    def test_extremes_converge_early(self, which):
        f, params, hess = make_problem(n=60, seed=1)
        want = np.linalg.eigvalsh(hess)
        got = np.asarray(nj.hessian_eigenvalues(f, params, k=3, which=which, key=KEY, num_steps=40))
        if which == "largest":
            ref = want[::-1][:3]
        elif which == "smallest":
            ref = want[:3][::-1]
        else:
            ref = np.sort(want[np.argsort(-np.abs(want))[:3]])[::-1]
        np.testing.assert_allclose(got, ref, rtol=1e-8)
        assert np.all(np.diff(got) <= 0)


class TestTrace:
    def test_unbiased_within_bound(self):
        f, params, hess = make_problem(n=30, seed=5)
        samples = 2000
        got = float(nj.hessian_trace(f, params, key=KEY, num_samples=samples))
        var = 2.0 * (np.sum(hess**2) - np.sum(np.diag(hess) ** 2))
        assert abs(got - np.trace(hess)) <= 5.0 * np.sqrt(var / samples)

    def test_exact_for_diagonal(self):
        f = lambda w: jnp.sum(jnp.exp(w))  # noqa: E731
        w = jnp.linspace(-1.0, 1.0, 7)
        np.testing.assert_allclose(
            nj.hessian_trace(f, w, key=KEY, num_samples=1), jnp.sum(jnp.exp(w)), rtol=1e-14
        )


class TestSpectralDensity:
    def test_quadrature_moments_match_probe_moments(self):
        # Gauss quadrature from m Lanczos steps integrates vᵀ H^p v exactly for
        # p <= 2m - 1: compare the nodes/weights against dense powers of H.
        f, params, hess = make_problem(n=30, seed=6)
        m, probes = 6, 4
        key = jax.random.PRNGKey(3)
        sd = nj.hessian_spectral_density(f, params, key=key, num_probes=probes, num_steps=m)
        zs = np.stack(
            [
                np.asarray(jax.random.rademacher(k, (30,), dtype=jnp.float64))
                for k in jax.random.split(key, probes)
            ]
        )
        for p in range(0, 2 * m):
            quad = np.sum(np.asarray(sd.weights) * np.asarray(sd.nodes) ** p, axis=1)
            hp = np.linalg.matrix_power(hess, p)
            exact = np.einsum("pi,ij,pj->p", zs, hp, zs) / 30.0
            np.testing.assert_allclose(quad, exact, rtol=1e-8, atol=1e-8 * np.max(np.abs(exact)))

    def test_density_integrates_to_one_and_locates_spectrum(self):
        f, params, hess = make_problem(n=30, seed=7)
        sd = nj.hessian_spectral_density(f, params, key=KEY, num_probes=4, num_steps=30)
        dx = float(sd.grid[1] - sd.grid[0])
        np.testing.assert_allclose(np.sum(sd.density) * dx, 1.0, rtol=1e-3)
        lam = np.linalg.eigvalsh(hess)
        assert float(sd.grid[0]) < lam[0] and float(sd.grid[-1]) > lam[-1]
        np.testing.assert_allclose(np.sum(sd.weights, axis=1), 1.0, rtol=1e-10)
