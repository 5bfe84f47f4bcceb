"""small_svd (QR + one-sided Jacobi) against numpy.linalg.svd."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from newtonjax.linalg import SMALL_SVD_MAX_COLUMNS, small_svd

jax.config.update("jax_enable_x64", True)


def with_singular_values(m, sv, seed):
    """An m × n matrix with the given singular values and random singular vectors."""
    rng = np.random.default_rng(seed)
    n = len(sv)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    w, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (u * np.asarray(sv, float)) @ w.T


def check_decomposition(a, res, rtol):
    s, v = np.asarray(res.s), np.asarray(res.v)
    n = a.shape[1]
    np.testing.assert_allclose(v.T @ v, np.eye(n), atol=rtol)
    # A V has orthogonal columns of norms s: A = U diag(s) Vᵀ with U = A V / s.
    av = a @ v
    np.testing.assert_allclose(np.linalg.norm(av, axis=0), s, rtol=rtol, atol=rtol * s.max())
    gram = av.T @ av
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=rtol * s.max() ** 2)


class SmallSVDTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((40, 4), (8, 8), (12, 7), (3, 1), (30, 8), (6, 2))
    def test_matches_numpy(self, m, n):
        a = np.random.default_rng(m * 10 + n).standard_normal((m, n))
        res = self.variant(small_svd)(jnp.asarray(a))
        ref = np.linalg.svd(a, compute_uv=False)
        np.testing.assert_allclose(np.sort(np.asarray(res.s))[::-1], ref, rtol=1e-13)
        check_decomposition(a, res, 1e-13)

    def test_graded_columns_keep_small_singular_values(self):
        # a = B·diag(1, 1e-4, 1e-8, 1e-12), B well conditioned: the small singular
        # values are determined to high relative accuracy by the data (Demmel &
        # Veselić 1992), and LAPACK's SVD resolves them too.
        rng = np.random.default_rng(3)
        a = rng.standard_normal((40, 4)) * np.array([1.0, 1e-4, 1e-8, 1e-12])
        got = np.sort(np.asarray(small_svd(jnp.asarray(a)).s))
        np.testing.assert_allclose(got, np.sort(np.linalg.svd(a, compute_uv=False)), rtol=1e-10)

    def test_ill_conditioned_and_rank_deficient(self):
        sv = [1.0, 1e-6, 1e-12, 0.0]
        a = with_singular_values(40, sv, seed=1)
        res = small_svd(jnp.asarray(a))
        got = np.sort(np.asarray(res.s))[::-1]
        np.testing.assert_allclose(got[:3], sv[:3], rtol=1e-4, atol=1e-15)
        assert got[3] <= 1e-15
        check_decomposition(a, res, 1e-12)

    def test_zero_and_repeated_singular_values(self):
        for a in (np.zeros((5, 3)), np.eye(4)[:, :3] * 2.0, np.ones((6, 4))):
            res = small_svd(jnp.asarray(a))
            np.testing.assert_allclose(
                np.sort(np.asarray(res.s))[::-1], np.linalg.svd(a, compute_uv=False), atol=1e-14
            )
            check_decomposition(a, res, 1e-13)

    def test_vmap_matches_single(self):
        a = np.random.default_rng(7).standard_normal((16, 20, 5))
        batched = jax.vmap(small_svd)(jnp.asarray(a))
        for i in range(a.shape[0]):
            single = jax.jit(small_svd)(jnp.asarray(a[i]))
            np.testing.assert_allclose(batched.s[i], single.s, rtol=1e-14)
            np.testing.assert_allclose(batched.v[i], single.v, atol=1e-14)

    def test_float32_smoke(self):
        a = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
        res = small_svd(jnp.asarray(a))
        assert res.s.dtype == jnp.float32
        np.testing.assert_allclose(
            np.sort(np.asarray(res.s))[::-1], np.linalg.svd(a, compute_uv=False), rtol=1e-5
        )

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="m >= n"):
            small_svd(jnp.ones((3, 4)))
        with pytest.raises(ValueError, match=f"n <= {SMALL_SVD_MAX_COLUMNS}"):
            small_svd(jnp.ones((20, SMALL_SVD_MAX_COLUMNS + 1)))
        with pytest.raises(ValueError, match="matrix"):
            small_svd(jnp.ones(3))
        with pytest.raises(TypeError, match="floating-point"):
            small_svd(jnp.ones((4, 2), jnp.int32))
