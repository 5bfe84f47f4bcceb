"""Newton's method as an optax transform, against closed forms and jax.hessian."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import newtonjax as nj
from newtonjax._transforms._newton import newton, scale_by_newton
from tests.transforms._helpers import assert_second_update_does_not_retrace, counting

RTOL = 1e-12


def rosenbrock(w):
    return jnp.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def run(opt, f, w0, steps):
    state = opt.init(w0)

    @jax.jit
    def step(w, state):
        value, grad = jax.value_and_grad(f)(w)
        updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(w, updates), state, value

    values = []
    w = w0
    for _ in range(steps):
        w, state, value = step(w, state)
        values.append(float(value))
    return w, state, np.array(values + [float(f(w))])


class TestDirection(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_undamped_step_solves_quadratic(self):
        a = jnp.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
        b = jnp.array([1.0, -2.0, 0.5])
        f = lambda p: 0.5 * p["w"] @ a @ p["w"] - b @ p["w"] + jnp.sum(p["c"] ** 2)  # noqa: E731
        params = {"w": jnp.array([3.0, -1.0, 2.0]), "c": jnp.array([[0.5, -0.5]])}
        tx = scale_by_newton()
        state = tx.init(params)
        g = jax.grad(f)(params)
        u, state = self.variant(lambda g, s, p: tx.update(g, s, p, value_fn=f))(g, state, params)
        new = optax.apply_updates(params, jax.tree.map(lambda x: -x, u))
        np.testing.assert_allclose(new["w"], np.linalg.solve(a, b), rtol=RTOL)
        np.testing.assert_allclose(new["c"], 0.0, atol=1e-15)
        assert not bool(state.info.modified)

    def test_seed_quadratic_one_step(self):
        target = jnp.array([1.0, 2.0, 3.0])
        f = lambda w: jnp.sum((w - target) ** 2)  # noqa: E731
        w, _, _ = run(newton(), f, jnp.zeros(3), 1)
        np.testing.assert_allclose(w, target, rtol=RTOL)

    def test_shift_at_saddle_gives_descent_direction(self):
        f = lambda w: w[0] ** 2 + w[0] * w[1] - w[1] ** 2  # noqa: E731
        w = jnp.array([0.5, 0.3])
        g = jax.grad(f)(w)
        tx = scale_by_newton(damping=0.1, scaling="none")
        u, state = tx.update(g, tx.init(w), w, value_fn=f)
        h = np.array([[2.0, 1.0], [1.0, -2.0]])
        lam = np.linalg.eigvalsh(h)
        tau = float(state.info.damping)
        # Minimal shift: the smallest eigenvalue of H + τI equals the floor, here damping.
        np.testing.assert_allclose(tau, 0.1 - lam[0], rtol=1e-12)
        np.testing.assert_allclose(u, np.linalg.solve(h + tau * np.eye(2), g), rtol=1e-12)
        assert float(jnp.vdot(u, g)) > 0  # -u is a descent direction
        assert bool(state.info.modified)
        np.testing.assert_allclose(state.info.min_eigenvalue, lam[0], rtol=1e-12)

    def test_scaled_shift_at_saddle_is_the_shift_of_the_scaled_hessian(self):
        # Badly scaled indefinite H: B = H + τD², D = sqrt|diag H|, with τ the
        # smallest shift that lifts the eigenvalues of D⁻¹HD⁻¹ to the floor δ.
        h = np.array([[1e6, 2e3], [2e3, 1.0]])  # D⁻¹HD⁻¹ = [[1, 2], [2, 1]]: λ = -1, 3
        f = lambda w: 0.5 * w @ jnp.asarray(h) @ w  # noqa: E731
        w = jnp.array([1e-3, 0.5])
        g = jax.grad(f)(w)
        tx = scale_by_newton()
        u, state = tx.update(g, tx.init(w), w, value_fn=f)
        d = np.sqrt(np.diag(h))
        delta = np.sqrt(np.finfo(np.float64).eps) * 3.0
        tau = delta + 1.0
        np.testing.assert_allclose(state.info.damping, tau, rtol=1e-10)
        np.testing.assert_allclose(state.info.min_eigenvalue, -1.0, rtol=1e-10)
        np.testing.assert_allclose(u, np.linalg.solve(h + tau * np.diag(d**2), g), rtol=1e-8)
        assert float(jnp.vdot(u, g)) > 0 and bool(state.info.modified)
        # Invariant to rescaling x: with x = z/c the step in z is c·(step in x).
        c = np.array([2.0**-5, 2.0**3])
        fz = lambda z: f(z / jnp.asarray(c))  # noqa: E731
        uz, _ = tx.update(jax.grad(fz)(w * c), tx.init(w), w * c, value_fn=fz)
        np.testing.assert_allclose(uz, c * np.asarray(u), rtol=1e-10)

    def test_damping_is_minimum_shift_for_convex_hessian(self):
        f = lambda w: jnp.sum(w**2) + w[0] * w[1]  # noqa: E731
        w = jnp.array([1.0, -2.0])
        g = jax.grad(f)(w)
        u, state = scale_by_newton(damping=0.5).update(g, None, w, value_fn=f)
        h = np.array([[2.0, 1.0], [1.0, 2.0]])
        np.testing.assert_allclose(u, np.linalg.solve(h + 0.5 * np.eye(2), g), rtol=1e-13)
        assert not bool(state.info.modified)

    def test_saddle_free_uses_absolute_eigenvalues(self):
        h = np.array([[2.0, 1.0], [1.0, -2.0]])
        f = lambda w: 0.5 * w @ jnp.asarray(h) @ w  # noqa: E731
        w = jnp.array([0.5, 0.3])
        g = jax.grad(f)(w)
        tx = scale_by_newton(saddle_free=True)
        u, _ = tx.update(g, tx.init(w), w, value_fn=f)
        lam, v = np.linalg.eigh(h)
        abs_h = v @ np.diag(np.abs(lam)) @ v.T
        np.testing.assert_allclose(u, np.linalg.solve(abs_h, g), rtol=1e-12)

    def test_cg_solver_matches_dense(self):
        f = lambda w: jnp.sum(jnp.cosh(w)) + 0.5 * jnp.sum(w[1:] * w[:-1])  # noqa: E731
        w = jnp.linspace(-1.0, 1.0, 6)
        g = jax.grad(f)(w)
        dense, _ = scale_by_newton().update(g, None, w, value_fn=f)
        tx = scale_by_newton(solver="cg", cg_rtol=1e-12)
        cgu, state = tx.update(g, tx.init(w), w, value_fn=f)
        np.testing.assert_allclose(cgu, dense, rtol=1e-9)
        np.testing.assert_allclose(dense, np.linalg.solve(jax.hessian(f)(w), g), rtol=1e-12)
        assert 1 <= int(state.info.cg_steps) <= 6

    @chex.variants(with_jit=True, without_jit=True)
    def test_ill_conditioned_positive_definite_hessian_is_not_modified(self):
        # λ = 1e-6 .. 1e6: positive definite, so no shift (N&W Alg. 3.3) and the
        # direction is exactly H⁻¹g, however far below sqrt(ε)·‖H‖ λ_min lies.
        h = np.diag([1e-6, 1.0, 1e6])
        f = lambda w: 0.5 * w @ jnp.asarray(h) @ w  # noqa: E731
        g = jnp.asarray(np.random.default_rng(0).standard_normal(3))
        w = jnp.zeros(3)
        tx = scale_by_newton()
        u, state = self.variant(lambda g, s, p: tx.update(g, s, p, value_fn=f))(g, tx.init(w), w)
        np.testing.assert_allclose(u, np.linalg.solve(h, np.asarray(g)), rtol=1e-10)
        assert not bool(state.info.modified)
        assert float(state.info.damping) == 0.0

    def test_minimize_solves_ill_conditioned_quadratic_in_one_step(self):
        h = jnp.diag(jnp.array([1e-6, 1.0, 1e6]))
        target = jnp.array([1.0, -2.0, 3.0])
        f = lambda w: 0.5 * (w - target) @ h @ (w - target)  # noqa: E731
        result = nj.minimize(f, jnp.zeros(3), method="newton")
        np.testing.assert_allclose(result.params, target, rtol=1e-10)
        assert int(result.num_steps) <= 2  # the Newton step, then the gtol test
        assert float(f(result.params)) <= 1e-20

    def test_cg_negative_curvature_on_first_iteration_falls_back_to_gradient(self):
        # H = [[2, 1], [1, -2]] and gᵀHg < 0 at w: CG stops before its first step.
        h = np.array([[2.0, 1.0], [1.0, -2.0]])
        f = lambda w: 0.5 * w @ jnp.asarray(h) @ w  # noqa: E731
        w = jnp.array([0.1, 1.0])
        g = jax.grad(f)(w)
        assert float(g @ h @ g) < 0
        tx = scale_by_newton(solver="cg")
        u, state = tx.update(g, tx.init(w), w, value_fn=f)
        assert float(jnp.vdot(u, g)) > 0  # -u is a descent direction
        np.testing.assert_allclose(u, g, rtol=RTOL)  # steepest descent
        assert bool(state.info.modified)

    def test_pure_step_on_singular_hessian_is_zero_not_nan(self):
        f = lambda w: jnp.sum(w[:1] ** 2)  # noqa: E731  (H = diag(2, 0))
        w = jnp.array([1.0, 1.0])
        tx = scale_by_newton(modification="none")
        u, state = tx.update(jax.grad(f)(w), tx.init(w), w, value_fn=f)
        assert np.all(np.isfinite(u))
        # LU of a singular matrix either fails (zero update, flagged) or is finite.
        if bool(state.info.singular):
            np.testing.assert_array_equal(u, 0.0)


class TestConvergence:
    def test_rosenbrock_with_line_search(self):
        w, _, values = run(newton(), rosenbrock, jnp.array([-1.2, 1.0]), 60)
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-10)
        assert np.all(np.diff(values) <= 1e-15)

    def test_quartic_near_singular_never_nan(self):
        f = lambda w: jnp.sum(w**4)  # noqa: E731
        w, _, values = run(newton(), f, jnp.array([1e-3, -2e-3, 0.5]), 40)
        assert np.all(np.isfinite(w)) and np.all(np.isfinite(values))
        assert float(f(w)) < 1e-16
        assert np.all(np.diff(values) <= 0.0)

    def test_saddle_free_escapes_saddle(self):
        f = lambda w: w[0] ** 2 - w[1] ** 2 + w[1] ** 4  # noqa: E731  minima at (0, ±1/√2)
        w0 = jnp.array([1e-3, 1e-4])
        w, _, values = run(newton(saddle_free=True), f, w0, 40)
        np.testing.assert_allclose(jnp.abs(w), [0.0, 1.0 / np.sqrt(2.0)], atol=1e-9)
        np.testing.assert_allclose(values[-1], -0.25, rtol=1e-12)
        # Plain (unmodified, no line search) Newton converges to the saddle instead.
        w_plain, _, _ = run(newton(modification="none", linesearch=None), f, w0, 20)
        np.testing.assert_allclose(w_plain, [0.0, 0.0], atol=1e-12)


class TestOptaxProtocol:
    def test_chain_with_optax_line_search_and_clipping(self):
        f = lambda w, data: jnp.sum((w - data) ** 4) + jnp.sum((w - data) ** 2)  # noqa: E731
        data = jnp.array([1.0, -1.0, 2.0])
        opt = optax.chain(
            scale_by_newton(),
            optax.clip_by_global_norm(1.0),
            optax.scale(-1.0),
            optax.scale_by_backtracking_linesearch(max_backtracking_steps=20),
        )
        w = jnp.zeros(3)
        state = opt.init(w)

        @jax.jit
        def step(w, state):
            value, g = jax.value_and_grad(f)(w, data)
            updates, state = opt.update(g, state, w, value=value, grad=g, value_fn=f, data=data)
            return optax.apply_updates(w, updates), state

        for _ in range(30):
            w, state = step(w, state)
        np.testing.assert_allclose(w, data, atol=1e-8)

    @pytest.mark.parametrize("solver", ["dense", "cg"])
    def test_no_recompile_on_second_update(self, solver):
        tx = scale_by_newton(solver=solver)
        traces = []
        f = counting(rosenbrock, traces)
        assert_second_update_does_not_retrace(tx, f, jnp.array([-1.2, 1.0]), traces)

    def test_inject_hyperparams(self):
        opt = optax.inject_hyperparams(newton)(learning_rate=1.0, damping=1e-3)
        traces = []

        def f(w):
            traces.append(1)
            return rosenbrock(w)

        @jax.jit
        def step(w, state):
            updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
            return optax.apply_updates(w, updates), state

        w = jnp.array([-1.2, 1.0])
        state = opt.init(w)
        # optax's line-search state starts weakly typed, so the first call may
        # trace twice; from then on, changing a hyperparameter's value must not.
        w, state = step(*step(w, state))
        n_traces = len(traces)
        state.hyperparams["damping"] = state.hyperparams["damping"] * 0.1
        for _ in range(40):
            w, state = step(w, state)
        assert len(traces) == n_traces
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-6)

    def test_apply_if_finite_and_vmap(self):
        opt = optax.apply_if_finite(newton(), max_consecutive_errors=3)
        targets = jnp.array([[1.0, 2.0], [-1.0, 0.5], [3.0, 3.0]])

        def solve(target):
            f = lambda w: jnp.sum((w - target) ** 2) + jnp.sum((w - target) ** 4)  # noqa: E731

            def step(carry, _):
                w, state = carry
                updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
                return (optax.apply_updates(w, updates), state), None

            w = jnp.zeros(2)
            (w, _), _ = jax.lax.scan(step, (w, opt.init(w)), length=25)
            return w

        got = jax.jit(jax.vmap(solve))(targets)
        np.testing.assert_allclose(got, targets, atol=1e-9)

    def test_float32_smoke(self):
        w, _, values = run(newton(), rosenbrock, jnp.array([-1.2, 1.0], jnp.float32), 60)
        assert w.dtype == jnp.float32
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-3)

    def test_missing_value_fn_and_bad_options(self):
        tx = scale_by_newton()
        with pytest.raises(TypeError, match="value_fn"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
        with pytest.raises(ValueError, match="solver"):
            scale_by_newton(solver="lu")
        with pytest.raises(ValueError, match="damping"):
            scale_by_newton(damping=-1.0)
        with pytest.raises(ValueError, match="scaling.*valid choices"):
            scale_by_newton(scaling="column")
        with pytest.raises(ValueError, match="saddle_free"):
            scale_by_newton(saddle_free=True, solver="cg")
