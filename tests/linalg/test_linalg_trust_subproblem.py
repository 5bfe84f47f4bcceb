"""Trust-region subproblem solvers against scipy and independent references.

References: ``scipy.optimize``'s private subproblem classes (``CGSteihaugSubproblem``,
``DoglegSubproblem``, ``IterativeSubproblem``), ``numpy.linalg.solve``/``pinv``, a
root of the secular equation by ``scipy.optimize.brentq`` on ``np.linalg.solve``,
the optimality conditions of Nocedal & Wright Thm. 4.1, and closed forms for the
hard case and the Cauchy point.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from absl.testing import absltest, parameterized
from jax.flatten_util import ravel_pytree
from scipy.optimize._trustregion_dogleg import DoglegSubproblem
from scipy.optimize._trustregion_exact import IterativeSubproblem
from scipy.optimize._trustregion_ncg import CGSteihaugSubproblem

from newtonjax.linalg import (
    SolverStatus,
    SteihaugResult,
    TrustRegionExactResult,
    TrustRegionStepResult,
    cauchy_point,
    dogleg,
    steihaug_cg,
    trust_region_exact,
)

jax.config.update("jax_enable_x64", True)

RTOL = 1e-10  # float64 accuracy target
MODEL_ATOL = 1e-12  # model values compared against scipy (relative to |m|)
RTOL_F32 = 2e-4  # float32 smoke tests
TIGHT = 1e-13  # CG tolerance when an exact Newton step is wanted

CONVERGED = int(SolverStatus.CONVERGED)
BOUNDARY = int(SolverStatus.BOUNDARY)
NEGATIVE = int(SolverStatus.NEGATIVE_CURVATURE)

TEMPLATE = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
N_TREE = 7


def random_symmetric(n, seed, kind):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    if kind == "spd":
        w = np.geomspace(0.5, 20.0, n)
    elif kind == "indefinite":
        w = np.linspace(-3.0, 5.0, n)
    else:
        raise ValueError(kind)
    return (Q * w) @ Q.T, rng.standard_normal(n)


def scipy_subproblem(cls, H, g, **kwargs):
    n = len(g)
    return cls(np.zeros(n), lambda x: 0.0, lambda x: g, lambda x: H, lambda x, v: H @ v, **kwargs)


def model(H, g, p):
    return g @ p + 0.5 * p @ H @ p


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def tree_from(vec):
    return ravel_pytree(TEMPLATE)[1](jnp.asarray(vec))


def tree_operator(H):
    H = jnp.asarray(H)
    unravel = ravel_pytree(TEMPLATE)[1]
    return lambda v: unravel(H @ ravel_pytree(v)[0])


def dense_operator(H):
    H = jnp.asarray(H)
    return lambda v: H @ v


def secular_reference(H, g, radius):
    """λ by brentq on ‖(H + λI)^{-1} g‖ = Δ with np.linalg.solve (easy case only)."""
    n = len(g)
    w_min = np.linalg.eigvalsh(H)[0]
    lo = max(0.0, -w_min)

    def norm_minus_radius(lam):
        return np.linalg.norm(np.linalg.solve(H + lam * np.eye(n), -g)) - radius

    if w_min > 0 and norm_minus_radius(0.0) <= 0:
        return 0.0, np.linalg.solve(H, -g)
    a = lo + 1e-12 * max(1.0, lo)
    while norm_minus_radius(a) < 0:  # pragma: no cover - only for badly chosen problems
        a = lo + (a - lo) * 1e-3
    b = lo + np.linalg.norm(g) / radius + 1.0
    lam = scipy.optimize.brentq(norm_minus_radius, a, b, xtol=1e-15, rtol=1e-15, maxiter=500)
    return lam, np.linalg.solve(H + lam * np.eye(n), -g)


def assert_optimality(H, g, radius, res, rtol=RTOL):
    """Nocedal & Wright Thm. 4.1: (H + λI)p = -g, λ >= 0, λ(Δ - ‖p‖) = 0, H + λI ⪰ 0."""
    p = np.asarray(res.step)
    lam = float(res.multiplier)
    n = len(g)
    scale = np.linalg.norm(H, 2) * np.linalg.norm(p) + np.linalg.norm(g)
    assert np.linalg.norm((H + lam * np.eye(n)) @ p + g) <= rtol * scale
    assert lam >= 0.0
    assert np.linalg.norm(p) <= radius * (1 + 1e-12)
    assert lam * abs(radius - np.linalg.norm(p)) <= rtol * max(1.0, lam) * radius
    assert np.linalg.eigvalsh(H + lam * np.eye(n))[0] >= -rtol * np.linalg.norm(H, 2)
    np.testing.assert_allclose(float(res.predicted_reduction), -model(H, g, p), rtol=1e-9)


def cauchy_reference(H, g, radius):
    """N&W eq. 4.12 as printed."""
    gHg = g @ H @ g
    gn = np.linalg.norm(g)
    tau = 1.0 if gHg <= 0 else min(gn**3 / (radius * gHg), 1.0)
    return -tau * radius / gn * g


# --------------------------------------------------------------------------- Steihaug


class SteihaugTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("spd", "indefinite")
    def test_matches_scipy(self, kind):
        n = 12
        radii = np.array([0.05, 0.5, 5.0, 100.0])
        solve = self.variant(
            jax.vmap(lambda H, g, r: steihaug_cg(lambda v: H @ v, g, r), in_axes=(None, None, 0))
        )
        for seed in range(2):
            H, g = random_symmetric(n, seed, kind)
            batch = solve(H, g, radii)
            for i, radius in enumerate(radii):
                res = jax.tree.map(lambda x, i=i: x[i], batch)
                p_ref, hits_ref = scipy_subproblem(CGSteihaugSubproblem, H, g).solve(radius)
                p = np.asarray(res.step)
                np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12 * radius)
                assert bool(res.hits_boundary) == bool(hits_ref)
                if hits_ref:
                    np.testing.assert_allclose(np.linalg.norm(p), radius, rtol=RTOL)
                    assert int(res.status) in (BOUNDARY, NEGATIVE)
                else:
                    assert int(res.status) == CONVERGED
                np.testing.assert_allclose(
                    float(res.predicted_reduction), -model(H, g, p), rtol=1e-9
                )
                np.testing.assert_allclose(
                    float(res.residual_norm), np.linalg.norm(g + H @ p), rtol=1e-7, atol=1e-12
                )
                # At least as good as the Cauchy point (N&W §7.1).
                p_c = cauchy_reference(H, g, radius)
                assert model(H, g, p) <= model(H, g, p_c) + 1e-12

    @chex.variants(with_jit=True, without_jit=True)
    def test_pytree_interior_is_newton_step(self):
        H, g_flat = random_symmetric(N_TREE, 10, "spd")
        g = tree_from(g_flat)
        res = self.variant(lambda g: steihaug_cg(tree_operator(H), g, 1e3, rtol=TIGHT))(g)
        assert isinstance(res, SteihaugResult)
        np.testing.assert_allclose(flat(res.step), np.linalg.solve(H, -g_flat), rtol=RTOL)
        assert int(res.status) == CONVERGED
        assert not bool(res.hits_boundary)
        chex.assert_trees_all_equal_shapes_and_dtypes(res.step, g)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pytree_boundary_matches_scipy(self):
        H, g_flat = random_symmetric(N_TREE, 11, "indefinite")
        for radius in (0.3, 3.0):
            res = self.variant(lambda g, r: steihaug_cg(tree_operator(H), g, r))(
                tree_from(g_flat), radius
            )
            p_ref, _ = scipy_subproblem(CGSteihaugSubproblem, H, g_flat).solve(radius)
            np.testing.assert_allclose(flat(res.step), p_ref, rtol=1e-9)
            np.testing.assert_allclose(np.linalg.norm(flat(res.step)), radius, rtol=RTOL)

    def test_negative_curvature_first_step(self):
        H = -np.diag([1.0, 2.0, 3.0])
        g = np.array([1.0, -2.0, 0.5])
        res = steihaug_cg(dense_operator(H), g, 2.0)
        assert int(res.status) == NEGATIVE and bool(res.hits_boundary)
        assert int(res.num_steps) == 1
        np.testing.assert_allclose(np.asarray(res.step), -2.0 * g / np.linalg.norm(g), rtol=RTOL)

    def test_max_steps_zero_gradient_and_nonfinite(self):
        H, g = random_symmetric(30, 12, "spd")
        res = steihaug_cg(dense_operator(H), g, 1e3, rtol=TIGHT, max_steps=3)
        assert int(res.status) == int(SolverStatus.MAX_STEPS)
        assert int(res.num_steps) == 3
        assert np.linalg.norm(np.asarray(res.step)) < 1e3
        np.testing.assert_allclose(
            float(res.predicted_reduction), -model(H, g, np.asarray(res.step)), rtol=1e-9
        )
        zero = steihaug_cg(dense_operator(H), np.zeros(30), 1.0)
        assert int(zero.status) == CONVERGED and int(zero.num_steps) == 0
        np.testing.assert_array_equal(np.asarray(zero.step), 0.0)
        bad = steihaug_cg(lambda v: v * jnp.nan, g, 1.0)
        assert int(bad.status) == int(SolverStatus.NONFINITE)
        assert np.all(np.isfinite(np.asarray(bad.step)))
        assert np.isfinite(float(bad.predicted_reduction))

    def test_vmap_over_radii(self):
        H, g = random_symmetric(10, 13, "indefinite")
        radii = np.array([0.01, 0.1, 1.0, 10.0])
        res = jax.jit(jax.vmap(lambda r: steihaug_cg(dense_operator(H), g, r)))(radii)
        for i, r in enumerate(radii):
            p_ref, _ = scipy_subproblem(CGSteihaugSubproblem, H, g).solve(r)
            np.testing.assert_allclose(np.asarray(res.step[i]), p_ref, rtol=1e-9)
        assert res.status.shape == (4,)

    def test_float32_smoke(self):
        H, g = random_symmetric(8, 14, "spd")
        H32, g32 = H.astype(np.float32), g.astype(np.float32)
        res = jax.jit(lambda g: steihaug_cg(dense_operator(H32), g, 100.0, rtol=1e-5))(g32)
        assert res.step.dtype == jnp.float32 and res.predicted_reduction.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(res.step), np.linalg.solve(H, -g), rtol=RTOL_F32)
        res = jax.jit(lambda g: steihaug_cg(dense_operator(H32), g, 0.1))(g32)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(res.step)), 0.1, rtol=1e-5)


# --------------------------------------------------------------------------- Cauchy / dogleg


class CauchyDoglegTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("spd", "indefinite")
    def test_cauchy_point_closed_form(self, kind):
        H, g = random_symmetric(9, 20, kind)
        for radius in (0.01, 0.1, 1.0, 10.0):
            res = self.variant(lambda g, r: cauchy_point(dense_operator(H), g, r))(g, radius)
            assert isinstance(res, TrustRegionStepResult)
            p_ref = cauchy_reference(H, g, radius)
            np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=RTOL)
            np.testing.assert_allclose(
                float(res.predicted_reduction), -model(H, g, p_ref), rtol=1e-9
            )
            on_boundary = np.isclose(np.linalg.norm(p_ref), radius, rtol=1e-12)
            assert bool(res.hits_boundary) == on_boundary
        # Negative curvature along g: boundary, NEGATIVE_CURVATURE.
        res = cauchy_point(lambda v: -v, g, 0.5)
        assert int(res.status) == NEGATIVE and bool(res.hits_boundary)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(res.step)), 0.5, rtol=RTOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_dogleg_matches_scipy(self):
        with_cg = self.variant(lambda H, g, r: dogleg(lambda v: H @ v, g, r, rtol=TIGHT))
        supplied = self.variant(lambda H, g, r, s: dogleg(lambda v: H @ v, g, r, newton_step=s))
        for seed in range(2):
            H, g = random_symmetric(10, 30 + seed, "spd")
            newton = np.linalg.solve(H, -g)
            nn = np.linalg.norm(newton)
            p_u_norm = (g @ g) / (g @ H @ g) * np.linalg.norm(g)
            for radius in (0.5 * p_u_norm, 0.5 * (p_u_norm + nn), 2.0 * nn):
                p_ref, hits_ref = scipy_subproblem(DoglegSubproblem, H, g).solve(radius)
                from_cg = with_cg(H, g, radius)
                assert int(from_cg.num_steps) > 0
                for res in (from_cg, supplied(H, g, radius, newton)):
                    np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=RTOL)
                    assert bool(res.hits_boundary) == bool(hits_ref)
                    assert int(res.status) == (BOUNDARY if hits_ref else CONVERGED)
                    np.testing.assert_allclose(
                        float(res.predicted_reduction), -model(H, g, p_ref), rtol=1e-9
                    )

    def test_dogleg_pytree_and_indefinite_fallback(self):
        H, g_flat = random_symmetric(N_TREE, 40, "spd")
        res = dogleg(tree_operator(H), tree_from(g_flat), 1e3, rtol=TIGHT)
        np.testing.assert_allclose(flat(res.step), np.linalg.solve(H, -g_flat), rtol=RTOL)
        # Indefinite: the Cauchy point is used, flagged as negative curvature.
        H, g = random_symmetric(10, 41, "indefinite")
        for radius in (0.1, 10.0):
            res = dogleg(dense_operator(H), g, radius)
            np.testing.assert_allclose(
                np.asarray(res.step), cauchy_reference(H, g, radius), rtol=RTOL
            )
            assert int(res.status) == NEGATIVE
            assert float(res.predicted_reduction) > 0
        # gᵀHg <= 0: steepest descent to the boundary.
        res = dogleg(lambda v: -v, g, 2.0)
        np.testing.assert_allclose(np.asarray(res.step), -2.0 * g / np.linalg.norm(g), rtol=RTOL)
        assert bool(res.hits_boundary) and int(res.status) == NEGATIVE

    def test_dogleg_uphill_newton_step_falls_back_to_cauchy_point(self):
        # Indefinite H with gᵀHg = 1.75 > 0: the supplied p_B = -H⁻¹g = (-¼, 3/2) has
        # gᵀp_B = 2 > 0 (uphill), so dogleg must not use it (N&W §4.1 assumes H ≻ 0).
        H = np.diag([4.0, -1.0])
        g = np.array([1.0, 1.5])
        p_b = -np.linalg.solve(H, g)
        assert g @ H @ g > 0 and g @ p_b > 0
        for radius in (0.5, 10.0):
            res = dogleg(dense_operator(H), jnp.asarray(g), radius, newton_step=jnp.asarray(p_b))
            want = cauchy_reference(H, g, radius)
            np.testing.assert_allclose(np.asarray(res.step), want, rtol=RTOL)
            assert int(res.status) == NEGATIVE
            assert float(res.predicted_reduction) >= 0
            np.testing.assert_allclose(float(res.predicted_reduction), -model(H, g, want), rtol=RTOL)

    def test_vmap_and_float32(self):
        H, g = random_symmetric(6, 42, "spd")
        radii = jnp.array([0.05, 0.5, 50.0])
        res = jax.jit(jax.vmap(lambda r: dogleg(dense_operator(H), g, r, rtol=TIGHT)))(radii)
        for i, r in enumerate(np.asarray(radii)):
            p_ref, _ = scipy_subproblem(DoglegSubproblem, H, g).solve(r)
            np.testing.assert_allclose(np.asarray(res.step[i]), p_ref, rtol=RTOL)
        H32, g32 = H.astype(np.float32), g.astype(np.float32)
        res = jax.jit(lambda g: dogleg(dense_operator(H32), g, 0.3, rtol=1e-6))(g32)
        p_ref, _ = scipy_subproblem(DoglegSubproblem, H, g).solve(0.3)
        assert res.step.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=RTOL_F32, atol=1e-6)


# --------------------------------------------------------------------------- exact


def hard_case_problem(n, seed, multiplicity=1):
    """w_1 = -2 (repeated), g ⟂ its eigenspace; radius twice the rest of the step."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.concatenate([np.full(multiplicity, -2.0), np.linspace(-1.0, 4.0, n - multiplicity)])
    H = (Q * w) @ Q.T
    coeffs = rng.standard_normal(n - multiplicity)
    g = Q[:, multiplicity:] @ coeffs
    p_rest = -Q[:, multiplicity:] @ (coeffs / (w[multiplicity:] + 2.0))
    radius = 2.0 * np.linalg.norm(p_rest)
    return H, g, radius, Q[:, :multiplicity], p_rest


class ExactTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("spd", "indefinite")
    def test_matches_references(self, kind):
        n = 10
        radii = np.array([0.05, 0.5, 5.0, 100.0])
        solve = self.variant(jax.vmap(trust_region_exact, in_axes=(None, None, 0)))
        for seed in range(3):
            H, g = random_symmetric(n, 50 + seed, kind)
            batch = solve(H, g, radii)
            assert isinstance(batch, TrustRegionExactResult)
            for i, radius in enumerate(radii):
                res = jax.tree.map(lambda x, i=i: x[i], batch)
                lam_ref, p_ref = secular_reference(H, g, radius)
                np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=1e-9, atol=1e-11)
                np.testing.assert_allclose(float(res.multiplier), lam_ref, rtol=1e-8, atol=1e-12)
                assert_optimality(H, g, radius, res)
                interior = lam_ref == 0.0
                assert bool(res.hits_boundary) == (not interior)
                assert int(res.status) == (CONVERGED if interior else BOUNDARY)
                assert not bool(res.hard_case)
                # scipy's Moré–Sorensen solver, run to a tight tolerance.
                p_sp, _ = scipy_subproblem(
                    IterativeSubproblem, H, g, k_easy=1e-12, k_hard=1e-12, maxiter=1000
                ).solve(radius)
                m, m_sp = model(H, g, np.asarray(res.step)), model(H, g, p_sp)
                assert m <= m_sp + MODEL_ATOL * abs(m_sp)

    @chex.variants(with_jit=True, without_jit=True)
    def test_interior_equals_solve(self):
        H, g = random_symmetric(12, 60, "spd")
        res = self.variant(lambda H, g: trust_region_exact(H, g, 1e6))(H, g)
        np.testing.assert_allclose(np.asarray(res.step), np.linalg.solve(H, -g), rtol=RTOL)
        assert float(res.multiplier) == 0.0 and int(res.num_steps) == 0
        assert int(res.status) == CONVERGED and not bool(res.hits_boundary)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 2)
    def test_hard_case(self, multiplicity):
        H, g, radius, Z, p_rest = hard_case_problem(9, 61, multiplicity)
        res = self.variant(lambda H, g, r: trust_region_exact(H, g, r))(H, g, radius)
        p = np.asarray(res.step)
        assert bool(res.hard_case) and bool(res.hits_boundary)
        assert int(res.status) == BOUNDARY
        np.testing.assert_allclose(float(res.multiplier), 2.0, rtol=RTOL)
        # p = p_rest + z with z in the eigenspace of -2 and ‖p‖ = Δ.
        along = Z @ (Z.T @ p)
        np.testing.assert_allclose(p - along, p_rest, rtol=RTOL)
        tau = np.sqrt(radius**2 - p_rest @ p_rest)
        np.testing.assert_allclose(np.linalg.norm(along), tau, rtol=RTOL)
        np.testing.assert_allclose(np.linalg.norm(p), radius, rtol=RTOL)
        assert_optimality(H, g, radius, res)
        expected_model = model(H, g, p_rest) + 0.5 * (-2.0) * tau**2
        np.testing.assert_allclose(-float(res.predicted_reduction), expected_model, rtol=RTOL)

    def test_near_hard_case_and_special_inputs(self):
        H, g, radius, Z, _ = hard_case_problem(8, 62)
        g_near = g + 1e-6 * Z[:, 0]
        res = trust_region_exact(H, g_near, radius)
        assert not bool(res.hard_case) and int(res.status) == BOUNDARY
        lam_ref, p_ref = secular_reference(H, g_near, radius)
        np.testing.assert_allclose(float(res.multiplier), lam_ref, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=1e-7)
        assert_optimality(H, g_near, radius, res, rtol=1e-9)
        # Singular PSD with g in the range: the minimum-norm step -H⁺g, interior.
        rng = np.random.default_rng(63)
        Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        H = (Q * np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0])) @ Q.T
        g = Q[:, 2:] @ rng.standard_normal(4)
        res = trust_region_exact(H, g, 100.0)
        np.testing.assert_allclose(np.asarray(res.step), -np.linalg.pinv(H) @ g, rtol=RTOL)
        assert int(res.status) == CONVERGED and float(res.multiplier) == 0.0
        # H = 0: steepest descent to the boundary, λ = ‖g‖/Δ.
        res = trust_region_exact(np.zeros((3, 3)), np.array([3.0, 0.0, 4.0]), 2.0)
        np.testing.assert_allclose(np.asarray(res.step), [-1.2, 0.0, -1.6], rtol=RTOL)
        np.testing.assert_allclose(float(res.multiplier), 2.5, rtol=RTOL)
        # g = 0, indefinite: the eigenvector of the smallest eigenvalue, to the boundary.
        H = np.diag([3.0, -1.0, 2.0])
        res = trust_region_exact(H, np.zeros(3), 0.7)
        np.testing.assert_allclose(np.abs(np.asarray(res.step)), [0.0, 0.7, 0.0], atol=1e-15)
        np.testing.assert_allclose(float(res.predicted_reduction), 0.5 * 0.49, rtol=RTOL)
        # g = 0, positive definite: zero step.
        res = trust_region_exact(np.eye(3), np.zeros(3), 1.0)
        np.testing.assert_array_equal(np.asarray(res.step), 0.0)
        assert int(res.status) == CONVERGED
        # Non-finite input: zero step, NONFINITE.
        res = trust_region_exact(np.full((3, 3), np.nan), np.ones(3), 1.0)
        assert int(res.status) == int(SolverStatus.NONFINITE)
        np.testing.assert_array_equal(np.asarray(res.step), 0.0)

    def test_vmap_over_radii_and_matrices(self):
        problems = [random_symmetric(7, 70 + s, k) for s, k in enumerate(("spd", "indefinite"))]
        Hs = np.stack([p[0] for p in problems])
        gs = np.stack([p[1] for p in problems])
        radii = np.array([0.3, 3.0])
        res = jax.jit(jax.vmap(trust_region_exact))(Hs, gs, radii)
        for i in range(2):
            _, p_ref = secular_reference(Hs[i], gs[i], radii[i])
            np.testing.assert_allclose(np.asarray(res.step[i]), p_ref, rtol=1e-9)
        H, g, radius, _, _ = hard_case_problem(7, 72)
        scales = np.array([0.5, 1.0, 3.0])
        res = jax.jit(jax.vmap(lambda r: trust_region_exact(H, g, r)))(radius * scales)
        for i, r in enumerate(radius * scales):
            np.testing.assert_allclose(np.linalg.norm(np.asarray(res.step[i])), r, rtol=RTOL)
            assert_optimality(H, g, r, jax.tree.map(lambda x, i=i: x[i], res))
        assert not bool(res.hard_case[0]) and bool(res.hard_case[1])

    def test_float32_smoke(self):
        for kind in ("spd", "indefinite"):
            H, g = random_symmetric(6, 80, kind)
            res = jax.jit(trust_region_exact)(H.astype(np.float32), g.astype(np.float32), 0.8)
            assert res.step.dtype == jnp.float32
            _, p_ref = secular_reference(H, g, 0.8)
            np.testing.assert_allclose(np.asarray(res.step), p_ref, rtol=1e-3, atol=1e-4)
            assert int(res.status) == BOUNDARY


def test_validation_errors():
    H = jnp.eye(3)
    g = jnp.ones(3)
    with pytest.raises(ValueError, match="trust_region_exact: H must be a square"):
        trust_region_exact(jnp.ones((3, 2)), g, 1.0)
    with pytest.raises(ValueError, match="trust_region_exact: g must have shape"):
        trust_region_exact(H, jnp.ones(4), 1.0)
    with pytest.raises(ValueError, match="trust_region_exact: radius must be finite and > 0"):
        trust_region_exact(H, g, 0.0)
    with pytest.raises(ValueError, match="trust_region_exact: max_steps must be >= 1"):
        trust_region_exact(H, g, 1.0, max_steps=0)
    with pytest.raises(ValueError, match="steihaug_cg: radius"):
        steihaug_cg(lambda v: v, g, -1.0)
    with pytest.raises(ValueError, match=r"steihaug_cg: matvec\(g\)"):
        steihaug_cg(lambda v: v[:2], g, 1.0)
    with pytest.raises(ValueError, match="dogleg: newton_step"):
        dogleg(lambda v: v, g, 1.0, newton_step=jnp.ones(2))
    with pytest.raises(TypeError, match="cauchy_point: g"):
        cauchy_point(lambda v: v, jnp.ones(3, jnp.int32), 1.0)


if __name__ == "__main__":
    absltest.main()
