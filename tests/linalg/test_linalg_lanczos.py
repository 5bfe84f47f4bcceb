"""Lanczos against numpy.linalg.eigvalsh / eigh and the defining relations of the process."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest
from jax.flatten_util import ravel_pytree

from newtonjax.linalg import LanczosResult, TridiagonalEigh, lanczos, tridiagonal_eigh

jax.config.update("jax_enable_x64", True)

RTOL = 1e-10  # float64 accuracy target
ORTHO_ATOL = 1e-12  # ‖QQᵀ - I‖ with full reorthogonalization
RTOL_F32 = 1e-4  # float32 smoke tests


def symmetric(n, seed, eigenvalues=None):
    rng = np.random.default_rng(seed)
    if eigenvalues is None:
        A = rng.standard_normal((n, n))
        return (A + A.T) / 2.0, rng.standard_normal(n)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.asarray(eigenvalues, float)) @ Q.T, rng.standard_normal(n)


def tridiagonal(res):
    a, b = np.asarray(res.alphas), np.asarray(res.betas)
    return np.diag(a) + np.diag(b, 1) + np.diag(b, -1)


class LanczosTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_full_run_recovers_spectrum(self):
        n = 50
        A, v0 = symmetric(n, 0)
        res = self.variant(lambda v: lanczos(lambda x: jnp.asarray(A) @ x, v, n))(v0)
        assert isinstance(res, LanczosResult)
        assert int(res.num_steps) == n
        ritz = tridiagonal_eigh(res.alphas, res.betas)
        assert isinstance(ritz, TridiagonalEigh)
        np.testing.assert_allclose(
            np.asarray(ritz.eigenvalues), np.linalg.eigvalsh(A), rtol=0, atol=RTOL
        )
        Q = np.asarray(res.basis)
        np.testing.assert_allclose(Q @ Q.T, np.eye(n), atol=ORTHO_ATOL)
        np.testing.assert_allclose(Q @ A @ Q.T, tridiagonal(res), atol=1e-11)
        np.testing.assert_allclose(Q[0], v0 / np.linalg.norm(v0), rtol=RTOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_extreme_eigenvalues_converge_early(self):
        n, m = 300, 40
        w = np.concatenate([[-30.0, -25.0], np.linspace(-5.0, 5.0, n - 4), [25.0, 30.0]])
        A, v0 = symmetric(n, 1, w)
        res = self.variant(lambda v: lanczos(lambda x: jnp.asarray(A) @ x, v, m))(v0)
        ritz = tridiagonal_eigh(res.alphas, res.betas)
        theta = np.asarray(ritz.eigenvalues)
        np.testing.assert_allclose(theta[[0, 1, -2, -1]], [-30.0, -25.0, 25.0, 30.0], rtol=1e-8)
        # Relation A Q_mᵀ = Q_mᵀ T_m + β_m q_m e_mᵀ: Ritz residuals are β_m |s_{m-1,i}|.
        Q = np.asarray(res.basis)
        S = np.asarray(ritz.eigenvectors)
        Y = Q.T @ S
        residuals = np.linalg.norm(A @ Y - Y * theta, axis=0)
        bounds = float(res.final_beta) * np.abs(S[-1])
        np.testing.assert_allclose(residuals, bounds, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(Q @ Q.T, np.eye(m), atol=ORTHO_ATOL)

    def test_pytree_and_without_reorthogonalization(self):
        template = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
        unravel = ravel_pytree(template)[1]
        A, v_flat = symmetric(7, 2)

        def op(v):
            return unravel(jnp.asarray(A) @ ravel_pytree(v)[0])

        v0 = unravel(jnp.asarray(v_flat))
        full = lanczos(op, v0, 7)
        np.testing.assert_allclose(
            np.asarray(tridiagonal_eigh(full.alphas, full.betas).eigenvalues),
            np.linalg.eigvalsh(A),
            atol=RTOL,
        )
        # For a few steps on a small, well-conditioned problem both variants agree.
        short = lanczos(op, v0, 4)
        plain = lanczos(op, v0, 4, reorthogonalize=False)
        np.testing.assert_allclose(np.asarray(plain.alphas), np.asarray(short.alphas), atol=1e-12)
        np.testing.assert_allclose(np.asarray(plain.betas), np.asarray(short.betas), atol=1e-12)
        np.testing.assert_allclose(
            np.asarray(short.alphas), np.asarray(full.alphas[:4]), atol=1e-12
        )
        assert short.basis.shape == (4, 7)

    def test_breakdown_on_invariant_subspace(self):
        # Three distinct eigenvalues: the Krylov space has dimension 3.
        w = np.array([1.0, 1.0, 1.0, 4.0, 4.0, 9.0, 9.0, 9.0])
        A, v0 = symmetric(8, 3, w)
        res = jax.jit(lambda v: lanczos(lambda x: jnp.asarray(A) @ x, v, 6))(v0)
        assert int(res.num_steps) == 3
        for leaf in jax.tree.leaves(res):
            assert np.all(np.isfinite(np.asarray(leaf)))
        np.testing.assert_array_equal(np.asarray(res.alphas[3:]), 0.0)
        np.testing.assert_array_equal(np.asarray(res.betas[2:]), 0.0)
        np.testing.assert_array_equal(np.asarray(res.basis[3:]), 0.0)
        assert float(res.final_beta) < 1e-12
        ritz = tridiagonal_eigh(res.alphas, res.betas, res.num_steps)
        np.testing.assert_array_equal(np.asarray(ritz.valid), [True] * 3 + [False] * 3)
        np.testing.assert_allclose(np.asarray(ritz.eigenvalues[:3]), [1.0, 4.0, 9.0], rtol=RTOL)
        np.testing.assert_array_equal(np.asarray(ritz.eigenvalues[3:]), 0.0)
        np.testing.assert_array_equal(np.asarray(ritz.eigenvectors[:, 3:]), 0.0)
        # Quadrature weights of the valid Ritz values sum to one.
        np.testing.assert_allclose(np.sum(np.asarray(ritz.eigenvectors[0]) ** 2), 1.0, rtol=RTOL)
        # Zero start vector and a non-finite operator: no NaN, no steps.
        res = lanczos(lambda x: x, jnp.zeros(4), 3)
        assert int(res.num_steps) == 0
        assert np.all(np.asarray(res.basis) == 0.0)
        res = lanczos(lambda x: x * jnp.nan, jnp.ones(4), 3)
        assert int(res.num_steps) == 0
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(res))

    def test_tridiagonal_eigh_matches_numpy(self):
        rng = np.random.default_rng(4)
        a, b = rng.standard_normal(6), rng.standard_normal(5)
        T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
        res = tridiagonal_eigh(a, b)
        np.testing.assert_allclose(np.asarray(res.eigenvalues), np.linalg.eigvalsh(T), rtol=RTOL)
        V = np.asarray(res.eigenvectors)
        np.testing.assert_allclose(T @ V, V * np.asarray(res.eigenvalues), atol=1e-12)
        k = 4  # leading block only, traced under jit
        res = jax.jit(tridiagonal_eigh)(a, b, k)
        np.testing.assert_allclose(
            np.asarray(res.eigenvalues[:k]), np.linalg.eigvalsh(T[:k, :k]), rtol=RTOL
        )
        np.testing.assert_array_equal(np.asarray(res.valid), np.arange(6) < k)

    def test_vmap_over_start_vectors(self):
        A, _ = symmetric(20, 5)
        v0s = np.random.default_rng(6).standard_normal((3, 20))
        batch = jax.jit(jax.vmap(lambda v: lanczos(lambda x: jnp.asarray(A) @ x, v, 20)))(v0s)
        evals = jax.vmap(tridiagonal_eigh)(batch.alphas, batch.betas).eigenvalues
        for i in range(3):
            np.testing.assert_allclose(np.asarray(evals[i]), np.linalg.eigvalsh(A), atol=RTOL)
        assert batch.basis.shape == (3, 20, 20)

    def test_float32_smoke(self):
        A, v0 = symmetric(16, 7)
        res = jax.jit(lambda v: lanczos(lambda x: jnp.asarray(A, jnp.float32) @ x, v, 16))(
            v0.astype(np.float32)
        )
        assert res.alphas.dtype == jnp.float32 and res.basis.dtype == jnp.float32
        evals = np.asarray(tridiagonal_eigh(res.alphas, res.betas).eigenvalues)
        exact = np.linalg.eigvalsh(A)
        np.testing.assert_allclose(evals, exact, atol=RTOL_F32 * np.max(np.abs(exact)))


def test_validation_errors():
    with pytest.raises(ValueError, match=r"lanczos: num_steps must be in \[1, n\]"):
        lanczos(lambda x: x, jnp.ones(3), 4)
    with pytest.raises(ValueError, match=r"lanczos: num_steps must be in \[1, n\]"):
        lanczos(lambda x: x, jnp.ones(3), 0)
    with pytest.raises(TypeError, match="lanczos: num_steps must be a Python int"):
        lanczos(lambda x: x, jnp.ones(3), jnp.array(2))
    with pytest.raises(ValueError, match=r"lanczos: matvec\(v0\)"):
        lanczos(lambda x: x[:2], jnp.ones(3), 2)
    with pytest.raises(ValueError, match="tridiagonal_eigh: betas must have shape"):
        tridiagonal_eigh(jnp.ones(3), jnp.ones(3))


if __name__ == "__main__":
    absltest.main()
