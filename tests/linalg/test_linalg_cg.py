"""Conjugate gradients against numpy.linalg.solve, scipy's CG and a plain numpy CG.

The operators act on pytrees of mixed shapes; the reference is the dense matrix
acting on the raveled vector (``ravel_pytree`` order).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg
from absl.testing import absltest
from jax.flatten_util import ravel_pytree

from newtonjax.linalg import CGResult, SolverStatus, cg

jax.config.update("jax_enable_x64", True)

RTOL = 1e-10  # float64 accuracy target
RTOL_F32 = 1e-4  # float32 smoke tests
SOLVE_RTOL = 1e-13  # CG tolerance used to reach RTOL
CONVERGED = int(SolverStatus.CONVERGED)


def spd_matrix(n, seed, cond=10.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.geomspace(1.0, cond, n)
    return (Q * w) @ Q.T


def indefinite_matrix(n, seed):
    """One eigenvalue -1, the others in [1, 3]; also returns the eigenvectors."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.concatenate([[-1.0], np.linspace(1.0, 3.0, n - 1)])
    return (Q * w) @ Q.T, Q


TEMPLATE = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
N_TREE = 7


def tree_from(vec, template=TEMPLATE):
    return ravel_pytree(template)[1](jnp.asarray(vec))


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def tree_operator(M, template=TEMPLATE):
    M = jnp.asarray(M)
    unravel = ravel_pytree(template)[1]
    return lambda v: unravel(M @ ravel_pytree(v)[0])


def numpy_cg(A, b, num_steps):
    """Textbook CG (Nocedal & Wright Alg. 5.2) in numpy; stops at pᵀAp <= 0."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    for _ in range(num_steps):
        Ap = A @ p
        pAp = p @ Ap
        if pAp <= 0:
            break
        alpha = (r @ r) / pAp
        x = x + alpha * p
        r_new = r - alpha * Ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


class CGTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_pytree_solve_matches_numpy(self):
        A = spd_matrix(N_TREE, seed=0)
        b_flat = np.random.default_rng(1).standard_normal(N_TREE)
        b = tree_from(b_flat)
        res = self.variant(lambda b: cg(tree_operator(A), b, rtol=SOLVE_RTOL))(b)
        assert isinstance(res, CGResult)
        expected = np.linalg.solve(A, b_flat)
        np.testing.assert_allclose(flat(res.x), expected, rtol=RTOL)
        assert int(res.status) == CONVERGED
        assert not bool(res.negative_curvature)
        assert 1 <= int(res.num_steps) <= 3 * N_TREE
        true_residual = np.linalg.norm(b_flat - A @ flat(res.x))
        assert float(res.residual_norm) <= SOLVE_RTOL * np.linalg.norm(b_flat) * 1.0001
        np.testing.assert_allclose(float(res.residual_norm), true_residual, atol=1e-13)
        chex.assert_trees_all_equal_shapes_and_dtypes(res.x, b)

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_scipy_cg(self):
        n = 30
        A = spd_matrix(n, seed=2, cond=100.0)
        b = np.random.default_rng(3).standard_normal(n)
        x_ref, info = scipy.sparse.linalg.cg(A, b, rtol=1e-14, atol=0.0, maxiter=10 * n)
        assert info == 0
        res = self.variant(lambda b: cg(lambda v: jnp.asarray(A) @ v, b, rtol=1e-14))(b)
        np.testing.assert_allclose(np.asarray(res.x), x_ref, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(res.x), np.linalg.solve(A, b), rtol=1e-9)

    @chex.variants(with_jit=True, without_jit=True)
    def test_preconditioner(self):
        n = 40
        rng = np.random.default_rng(4)
        D = np.geomspace(1e-2, 1e3, n)
        A = np.sqrt(D)[:, None] * spd_matrix(n, seed=5, cond=5.0) * np.sqrt(D)[None, :]
        b = rng.standard_normal(n)
        diag = jnp.asarray(np.diag(A))
        op = lambda v: jnp.asarray(A) @ v  # noqa: E731
        plain = self.variant(lambda b: cg(op, b, rtol=1e-12))(b)
        jacobi = self.variant(lambda b: cg(op, b, rtol=1e-12, preconditioner=lambda r: r / diag))(b)
        expected = np.linalg.solve(A, b)
        np.testing.assert_allclose(np.asarray(jacobi.x), expected, rtol=1e-9)
        assert int(jacobi.status) == CONVERGED
        assert int(jacobi.num_steps) < int(plain.num_steps)

    @chex.variants(with_jit=True, without_jit=True)
    def test_x0_and_zero_rhs(self):
        A = spd_matrix(N_TREE, seed=6)
        b_flat = np.random.default_rng(7).standard_normal(N_TREE)
        x_star = tree_from(np.linalg.solve(A, b_flat))
        op = tree_operator(A)
        res = self.variant(lambda b, x0: cg(op, b, x0=x0, rtol=1e-8))(tree_from(b_flat), x_star)
        assert int(res.num_steps) == 0
        assert int(res.status) == CONVERGED
        # A poor x0 still converges to the solution.
        res = self.variant(lambda b, x0: cg(op, b, x0=x0, rtol=SOLVE_RTOL))(
            tree_from(b_flat), tree_from(np.ones(N_TREE))
        )
        np.testing.assert_allclose(flat(res.x), flat(x_star), rtol=RTOL)
        zero = self.variant(lambda b: cg(op, b))(tree_from(np.zeros(N_TREE)))
        assert int(zero.num_steps) == 0 and int(zero.status) == CONVERGED
        np.testing.assert_array_equal(flat(zero.x), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_max_steps_matches_textbook_iterates(self):
        n = 20
        A = spd_matrix(n, seed=8, cond=1e3)
        b = np.random.default_rng(9).standard_normal(n)
        for k in (1, 2, 5):
            res = self.variant(lambda b, k=k: cg(lambda v: jnp.asarray(A) @ v, b, max_steps=k))(b)
            assert int(res.status) == int(SolverStatus.MAX_STEPS)
            assert int(res.num_steps) == k
            np.testing.assert_allclose(np.asarray(res.x), numpy_cg(A, b, k), rtol=1e-9)

    @chex.variants(with_jit=True, without_jit=True)
    def test_negative_curvature(self):
        # First direction b has bᵀAb < 0: x stays 0.
        A = -spd_matrix(5, seed=10)
        b = np.random.default_rng(11).standard_normal(5)
        res = self.variant(lambda b: cg(lambda v: jnp.asarray(A) @ v, b))(b)
        assert int(res.status) == int(SolverStatus.NEGATIVE_CURVATURE)
        assert bool(res.negative_curvature)
        assert int(res.num_steps) == 1
        np.testing.assert_array_equal(np.asarray(res.x), 0.0)
        # Later negative curvature: the last iterate before it is returned.
        A, Q = indefinite_matrix(12, seed=12)
        coeffs = np.random.default_rng(13).standard_normal(12)
        coeffs[0] = 0.3  # bᵀAb > 0: negative curvature shows up later
        b = Q @ coeffs
        assert b @ A @ b > 0
        res = self.variant(lambda b: cg(lambda v: jnp.asarray(A) @ v, b, max_steps=50))(b)
        assert int(res.status) == int(SolverStatus.NEGATIVE_CURVATURE)
        k = int(res.num_steps)
        assert k >= 2
        np.testing.assert_allclose(np.asarray(res.x), numpy_cg(A, b, k), rtol=1e-9)
        assert np.all(np.isfinite(np.asarray(res.x)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_curvature_of_a_singular_operator_is_not_positive(self):
        # A = diag(1, 0) is PSD and singular; b = e_2 spans its null space, so the
        # first direction has pᵀAp = 0 exactly: CG stops there (N&W Alg. 5.2 would
        # divide by zero), with x = 0 and no non-finite value.
        A = jnp.diag(jnp.array([1.0, 0.0]))
        res = self.variant(lambda b: cg(lambda v: A @ v, b))(jnp.array([0.0, 1.0]))
        assert int(res.status) == int(SolverStatus.NEGATIVE_CURVATURE)
        assert int(res.num_steps) == 1
        np.testing.assert_array_equal(np.asarray(res.x), 0.0)

    def test_nonfinite_operator(self):
        res = jax.jit(lambda b: cg(lambda v: v * jnp.nan, b))(jnp.ones(3))
        assert int(res.status) == int(SolverStatus.NONFINITE)
        assert np.all(np.isfinite(np.asarray(res.x)))
        res = cg(lambda v: v, jnp.array([1.0, jnp.inf]))
        assert int(res.status) == int(SolverStatus.NONFINITE)
        assert np.all(np.isfinite(np.asarray(res.x)))

    def test_traced_hyperparameters_and_vmap(self):
        A = jnp.asarray(spd_matrix(N_TREE, seed=14))
        op = tree_operator(A)
        rng = np.random.default_rng(15)
        bs = rng.standard_normal((4, N_TREE))
        trees = jax.vmap(tree_from)(jnp.asarray(bs))
        solve = jax.jit(jax.vmap(lambda b, rtol, k: cg(op, b, rtol=rtol, max_steps=k)))
        res = solve(trees, jnp.full(4, SOLVE_RTOL), jnp.full(4, 100, jnp.int32))
        got = jax.vmap(lambda t: ravel_pytree(t)[0])(res.x)
        np.testing.assert_allclose(np.asarray(got), np.linalg.solve(A, bs.T).T, rtol=RTOL)
        np.testing.assert_array_equal(np.asarray(res.status), CONVERGED)
        assert res.num_steps.shape == (4,)

    def test_float32_smoke(self):
        A = spd_matrix(N_TREE, seed=16).astype(np.float32)
        b_flat = np.random.default_rng(17).standard_normal(N_TREE).astype(np.float32)
        template = {"a": jnp.zeros(3, jnp.float32), "b": jnp.zeros((2, 2), jnp.float32)}
        b = tree_from(b_flat, template)
        res = jax.jit(lambda b: cg(tree_operator(A, template), b))(b)
        assert jax.tree.leaves(res.x)[0].dtype == jnp.float32
        assert res.residual_norm.dtype == jnp.float32
        np.testing.assert_allclose(
            flat(res.x), np.linalg.solve(A.astype(np.float64), b_flat), rtol=RTOL_F32, atol=1e-5
        )
        assert int(res.status) == CONVERGED


def test_gradients_by_implicit_differentiation():
    A = spd_matrix(5, seed=18)
    b = np.random.default_rng(19).standard_normal(5)
    c = np.random.default_rng(20).standard_normal(5)

    def loss(A, b):
        return jnp.dot(c, cg(lambda v: A @ v, b, rtol=1e-14).x)

    def reference(A, b):
        return jnp.dot(c, jnp.linalg.solve(A, b))

    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(A, b)
    expected = jax.grad(reference, argnums=(0, 1))(A, b)
    # Closed form: d/db = A⁻¹c, d/dA = -(A⁻¹c)(A⁻¹b)ᵀ.
    y = np.linalg.solve(A, c)
    np.testing.assert_allclose(np.asarray(got[1]), y, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(got[0]), -np.outer(y, np.linalg.solve(A, b)), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(expected[0]), rtol=1e-9)


def test_validation_errors():
    b = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"cg: matvec\(b\)"):
        cg(lambda v: v["a"], b)
    with pytest.raises(ValueError, match="cg: max_steps must be >= 1"):
        cg(lambda v: v, b, max_steps=0)
    with pytest.raises(ValueError, match="cg: rtol"):
        cg(lambda v: v, b, rtol=-1.0)
    with pytest.raises(ValueError, match="cg: x0"):
        cg(lambda v: v, b, x0={"a": jnp.ones(3)})
    with pytest.raises(TypeError, match="cg: b"):
        cg(lambda v: v, jnp.ones(3, jnp.int32))
    with pytest.raises(TypeError, match="cg: matvec must be a callable"):
        cg(jnp.eye(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"cg: preconditioner\(b\)"):
        cg(lambda v: v, jnp.ones(3), preconditioner=lambda r: r[:2])


if __name__ == "__main__":
    absltest.main()
