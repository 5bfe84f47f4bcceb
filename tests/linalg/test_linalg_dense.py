"""Damped Cholesky and modified-eigenvalue solves against numpy.linalg."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from newtonjax.linalg import (
    DampedCholeskyResult,
    EighSolveResult,
    SolverStatus,
    damped_cholesky_solve,
    eigh_solve,
)

jax.config.update("jax_enable_x64", True)

RTOL = 1e-10  # float64 accuracy target
RTOL_F32 = 1e-4  # float32 smoke tests
CONVERGED = int(SolverStatus.CONVERGED)


def symmetric(n, seed, eigenvalues):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.asarray(eigenvalues, float)) @ Q.T, rng.standard_normal(n)


class DampedCholeskyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_positive_definite_uses_requested_damping(self):
        H, b = symmetric(8, 0, np.geomspace(0.1, 10.0, 8))
        res = self.variant(lambda H, b: damped_cholesky_solve(H, b))(H, b)
        assert isinstance(res, DampedCholeskyResult)
        np.testing.assert_allclose(np.asarray(res.x), np.linalg.solve(H, b), rtol=RTOL)
        assert float(res.damping) == 0.0 and int(res.num_tries) == 1
        assert int(res.status) == CONVERGED
        np.testing.assert_allclose(np.asarray(res.factor), np.linalg.cholesky(H), rtol=RTOL)
        res = self.variant(lambda H, b, d: damped_cholesky_solve(H, b, damping=d))(H, b, 0.5)
        np.testing.assert_allclose(
            np.asarray(res.x), np.linalg.solve(H + 0.5 * np.eye(8), b), rtol=RTOL
        )
        assert float(res.damping) == 0.5

    @chex.variants(with_jit=True, without_jit=True)
    def test_indefinite_and_singular(self):
        H, b = symmetric(8, 1, np.linspace(-0.3, 4.0, 8))
        res = self.variant(lambda H, b: damped_cholesky_solve(H, b))(H, b)
        lam = float(res.damping)
        assert lam > 0.3  # H + λI must be positive definite
        assert int(res.num_tries) > 1 and int(res.status) == CONVERGED
        np.testing.assert_allclose(
            np.asarray(res.x), np.linalg.solve(H + lam * np.eye(8), b), rtol=RTOL
        )
        factor = np.asarray(res.factor)
        np.testing.assert_allclose(factor @ factor.T, H + lam * np.eye(8), atol=1e-12)
        # The geometric sequence (growth 10) overshoots the minimal shift 0.3 by at
        # most one decade.
        assert lam <= 3.0
        # Singular and zero matrices: finite solutions.
        for H_sing in (np.diag([1.0, 0.0, 2.0]), np.zeros((3, 3)), -np.eye(3)):
            res = self.variant(lambda H, b: damped_cholesky_solve(H, b))(H_sing, np.ones(3))
            assert int(res.status) == CONVERGED
            lam = float(res.damping)
            assert np.linalg.eigvalsh(H_sing + lam * np.eye(3))[0] > 0
            np.testing.assert_allclose(
                np.asarray(res.x), np.linalg.solve(H_sing + lam * np.eye(3), np.ones(3)), rtol=RTOL
            )

    def test_max_tries_uses_gershgorin_shift(self):
        H, b = symmetric(6, 2, np.linspace(-50.0, 1.0, 6))
        res = damped_cholesky_solve(H, b, max_tries=2)
        assert int(res.status) == CONVERGED and int(res.num_tries) == 2
        lam = float(res.damping)
        assert np.linalg.eigvalsh(H + lam * np.eye(6))[0] > 0
        np.testing.assert_allclose(
            np.asarray(res.x), np.linalg.solve(H + lam * np.eye(6), b), rtol=RTOL
        )

    def test_matrix_rhs_vmap_and_traced(self):
        H, _ = symmetric(5, 3, np.linspace(-1.0, 3.0, 5))
        B = np.random.default_rng(4).standard_normal((5, 3))
        res = damped_cholesky_solve(H, B)
        lam = float(res.damping)
        np.testing.assert_allclose(
            np.asarray(res.x), np.linalg.solve(H + lam * np.eye(5), B), rtol=RTOL
        )
        dampings = jnp.array([0.0, 2.0, 5.0])
        batch = jax.jit(jax.vmap(lambda d: damped_cholesky_solve(H, B[:, 0], damping=d)))(dampings)
        for i in range(3):
            lam = float(batch.damping[i])
            assert lam >= float(dampings[i])
            np.testing.assert_allclose(
                np.asarray(batch.x[i]), np.linalg.solve(H + lam * np.eye(5), B[:, 0]), rtol=RTOL
            )
        assert float(batch.damping[1]) == 2.0  # already positive definite

    def test_float32_and_nonfinite(self):
        H, b = symmetric(6, 5, np.linspace(-1.0, 3.0, 6))
        res = jax.jit(damped_cholesky_solve)(H.astype(np.float32), b.astype(np.float32))
        assert res.x.dtype == jnp.float32
        lam = float(res.damping)
        np.testing.assert_allclose(
            np.asarray(res.x), np.linalg.solve(H + lam * np.eye(6), b), rtol=RTOL_F32, atol=1e-5
        )
        res = damped_cholesky_solve(np.full((2, 2), np.nan), np.ones(2))
        assert int(res.status) == int(SolverStatus.NONFINITE)
        np.testing.assert_array_equal(np.asarray(res.x), 0.0)


class EighSolveTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("clip", "shift", "abs")
    def test_modes_match_numpy(self, mode):
        w_true = np.array([-2.0, -1e-3, 0.5, 1.0, 3.0, 8.0])
        H, b = symmetric(6, 10, w_true)
        delta = 0.1
        res = self.variant(lambda H, b, d: eigh_solve(H, b, min_eigenvalue=d, mode=mode))(
            H, b, delta
        )
        assert isinstance(res, EighSolveResult)
        w, V = np.linalg.eigh(H)
        if mode == "clip":
            mu = np.maximum(w, delta)
        elif mode == "shift":
            mu = w + max(0.0, delta - w[0])
        else:
            mu = np.maximum(np.abs(w), delta)
        expected = V @ ((V.T @ b) / mu)
        np.testing.assert_allclose(np.asarray(res.x), expected, rtol=RTOL)
        np.testing.assert_allclose(np.asarray(res.eigenvalues), w_true, atol=1e-12)
        np.testing.assert_allclose(np.asarray(res.modified_eigenvalues), mu, rtol=RTOL)
        expected_modified = {"clip": 2, "shift": 6, "abs": 2}[mode]
        assert int(res.num_modified) == expected_modified
        assert int(res.status) == CONVERGED

    def test_positive_definite_is_newton_and_defaults(self):
        H, b = symmetric(7, 11, np.geomspace(0.5, 50.0, 7))
        for mode in ("clip", "shift", "abs"):
            res = eigh_solve(H, b, mode=mode)
            np.testing.assert_allclose(np.asarray(res.x), np.linalg.solve(H, b), rtol=RTOL)
            assert int(res.num_modified) == 0
        # Default δ = sqrt(eps)·max|λ| keeps a singular H finite; matrix right-hand sides.
        B = np.ones((3, 2))
        res = eigh_solve(np.diag([2.0, 0.0, -1.0]), B, mode="abs")
        delta = np.sqrt(np.finfo(np.float64).eps) * 2.0
        np.testing.assert_allclose(
            np.asarray(res.x), B / np.array([2.0, delta, 1.0])[:, None], rtol=RTOL
        )

    def test_vmap_and_float32(self):
        Hs = np.stack([symmetric(5, 20 + i, np.linspace(-1.0, 2.0, 5))[0] for i in range(3)])
        b = np.ones(5)
        res = jax.jit(jax.vmap(lambda H: eigh_solve(H, b, min_eigenvalue=0.2, mode="abs")))(Hs)
        for i in range(3):
            w, V = np.linalg.eigh(Hs[i])
            expected = V @ ((V.T @ b) / np.maximum(np.abs(w), 0.2))
            np.testing.assert_allclose(np.asarray(res.x[i]), expected, rtol=RTOL)
        res = eigh_solve(Hs[0].astype(np.float32), b.astype(np.float32), min_eigenvalue=0.2)
        assert res.x.dtype == jnp.float32
        w, V = np.linalg.eigh(Hs[0])
        expected = V @ ((V.T @ b) / np.maximum(w, 0.2))
        np.testing.assert_allclose(np.asarray(res.x), expected, rtol=RTOL_F32)
        res = eigh_solve(np.eye(2), np.array([1.0, np.inf]))
        assert int(res.status) == int(SolverStatus.NONFINITE)
        np.testing.assert_array_equal(np.asarray(res.x), 0.0)


def test_gradients_match_plain_solve():
    H, b = symmetric(4, 30, [2.0, 2.0, 3.0, 5.0])  # a repeated eigenvalue
    c = np.random.default_rng(31).standard_normal(4)

    def reference(H, b, d):  # H enters symmetrized, as in the solvers
        return jnp.dot(c, jnp.linalg.solve(0.5 * (H + H.T) + d * jnp.eye(4), b))

    expected = jax.grad(reference, argnums=(0, 1, 2))(H, b, 0.5)

    def via_cholesky(H, b, d):
        return jnp.dot(c, damped_cholesky_solve(H, b, damping=d).x)

    got = jax.jit(jax.grad(via_cholesky, argnums=(0, 1, 2)))(H, b, 0.5)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-9, atol=1e-12)

    def via_eigh(H, b):
        return jnp.dot(c, eigh_solve(H, b, min_eigenvalue=0.1).x)

    got = jax.jit(jax.grad(via_eigh, argnums=(0, 1)))(H, b)
    expected = jax.grad(reference, argnums=(0, 1))(H, b, 0.0)
    for g, e in zip(got, expected, strict=True):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-9, atol=1e-12)


def test_validation_errors():
    with pytest.raises(ValueError, match="damped_cholesky_solve: H must be a square"):
        damped_cholesky_solve(jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="damped_cholesky_solve: b must have shape"):
        damped_cholesky_solve(jnp.eye(3), jnp.ones(2))
    with pytest.raises(ValueError, match="damped_cholesky_solve: damping"):
        damped_cholesky_solve(jnp.eye(3), jnp.ones(3), damping=-1.0)
    with pytest.raises(ValueError, match="damped_cholesky_solve: growth must be > 1"):
        damped_cholesky_solve(jnp.eye(3), jnp.ones(3), growth=1.0)
    with pytest.raises(ValueError, match="damped_cholesky_solve: max_tries must be >= 1"):
        damped_cholesky_solve(jnp.eye(3), jnp.ones(3), max_tries=0)
    with pytest.raises(TypeError, match="damped_cholesky_solve: H must have a real"):
        damped_cholesky_solve(jnp.eye(3, dtype=jnp.int32), jnp.ones(3))
    with pytest.raises(ValueError, match="eigh_solve: unknown mode 'sqrt'"):
        eigh_solve(jnp.eye(3), jnp.ones(3), mode="sqrt")
    with pytest.raises(ValueError, match="eigh_solve: min_eigenvalue"):
        eigh_solve(jnp.eye(3), jnp.ones(3), min_eigenvalue=-0.1)


if __name__ == "__main__":
    absltest.main()
