"""Hessian-free optimization as an optax transform: Newton steps on quadratics, GGN vs
Hessian curvature, warm-started CG, Martens' damping rule and a small MLP."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from newtonjax import linalg
from newtonjax._objectives import composite_objective, least_squares_objective
from newtonjax._transforms._hessian_free import (
    hessian_free,
    martens_damping_update,
    scale_by_hessian_free,
)
from tests.transforms._helpers import assert_second_update_does_not_retrace, counting

jax.config.update("jax_enable_x64", True)

RTOL = 1e-10  # float64 CG with cg_rtol=1e-14 against numpy solves
F32_ATOL = 1e-3

A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
B = np.array([1.0, -2.0, 0.5])


def quadratic(p):
    return 0.5 * p["w"] @ A @ p["w"] - B @ p["w"] + jnp.sum(p["c"] ** 2)


def residual(w):
    return jnp.stack([w[0] ** 2 - w[1], w[0] * w[1] - 1.0, jnp.sin(w[0] - w[1])])  # zero at (1, 1)


class TestStep(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_convex_quadratic_one_step_is_newton_step(self):
        params = {"w": jnp.array([3.0, -1.0, 2.0]), "c": jnp.array([[0.5, -0.5]])}
        tx = scale_by_hessian_free(1e-12, cg_rtol=1e-14, max_cg_steps=50)
        update = self.variant(lambda g, s, p: tx.update(g, s, p, value_fn=quadratic))
        u, state = update(jax.grad(quadratic)(params), tx.init(params), params)
        new = optax.apply_updates(params, jax.tree.map(lambda x: -x, u))
        np.testing.assert_allclose(new["w"], np.linalg.solve(A, B), rtol=RTOL)
        np.testing.assert_allclose(new["c"], 0.0, atol=1e-12)  # λ = 1e-12 shrinks it
        assert not bool(state.info.rejected)
        assert int(state.info.cg_steps) <= 5
        assert int(state.info.cg_status) == linalg.SolverStatus.CONVERGED
        # A quadratic model that is exact gives ρ = 1, so λ shrinks by 2/3.
        np.testing.assert_allclose(state.info.rho, 1.0, rtol=1e-8)
        np.testing.assert_allclose(state.damping, 1e-12 / 1.5, rtol=1e-12)

    @parameterized.parameters(("auto", "ggn"), ("ggn", "ggn"), ("hessian", "hessian"))
    def test_curvature_of_structured_objective(self, curvature, expected_kind):
        loss = least_squares_objective(residual)
        w = jnp.array([0.7, -0.4])
        g = jax.grad(loss)(w)
        lam = 2.0
        tx = scale_by_hessian_free(lam, curvature=curvature, cg_rtol=1e-14)
        u, state = tx.update(g, tx.init(w), w, value_fn=loss)
        jac = np.asarray(jax.jacfwd(residual)(w))
        matrix = jac.T @ jac if expected_kind == "ggn" else np.asarray(jax.hessian(loss)(w))
        expected = np.linalg.solve(matrix + lam * np.eye(2), np.asarray(g))
        assert not bool(state.info.rejected)
        np.testing.assert_allclose(u, expected, rtol=RTOL)
        np.testing.assert_allclose(state.cg_solution, expected, rtol=RTOL)
        np.testing.assert_allclose(
            state.info.predicted_reduction,
            g @ expected - 0.5 * expected @ (matrix @ expected),
            rtol=RTOL,
        )

    def test_plain_callable_uses_hessian_and_ggn_needs_structure(self):
        f = lambda w: jnp.sum(jnp.cosh(w)) + w[0] * w[1]  # noqa: E731
        w = jnp.array([0.3, -0.8])
        g = jax.grad(f)(w)
        tx = scale_by_hessian_free(0.5, cg_rtol=1e-14)
        _, state = tx.update(g, tx.init(w), w, value_fn=f)
        expected = np.linalg.solve(np.asarray(jax.hessian(f)(w)) + 0.5 * np.eye(2), g)
        np.testing.assert_allclose(state.cg_solution, expected, rtol=RTOL)
        tx = scale_by_hessian_free(curvature="ggn")
        with pytest.raises(TypeError, match="least_squares_objective") as err:
            tx.update(g, tx.init(w), w, value_fn=f)
        assert "composite_objective" in str(err.value)

    def test_warm_start_from_decayed_previous_solution(self):
        f = lambda w: 0.5 * w @ jnp.asarray(A) @ w - jnp.asarray(B) @ w  # noqa: E731
        lam, decay = 0.1, 0.9
        tx = scale_by_hessian_free(lam, max_cg_steps=1, warm_start_decay=decay)
        w = jnp.zeros(3)
        state = tx.init(w)
        x_prev = np.zeros(3)
        for _ in range(3):
            g = np.asarray(jax.grad(f)(w))
            damping = float(state.damping)
            mat = A + damping * np.eye(3)
            # One CG step in numpy from x0 = decay · previous solution.
            x0 = decay * x_prev
            r0 = g - mat @ x0
            x1 = x0 + (r0 @ r0) / (r0 @ mat @ r0) * r0
            u, state = tx.update(jnp.asarray(g), state, w, value_fn=f)
            # The CG iterate is kept (and warm-starts the next solve) only if it
            # lowers the damped model q(x) = ½xᵀ(A + λI)x − gᵀx below q(0) = 0.
            useful = 0.5 * x1 @ mat @ x1 - g @ x1 < 0
            np.testing.assert_allclose(state.cg_solution, x1 if useful else 0.0, rtol=1e-12)
            assert int(state.info.cg_steps) == 1
            x_prev = x1 if useful else np.zeros(3)
            w = w - u

    def test_negative_curvature_falls_back_to_damped_gradient(self):
        f = lambda w: w[0] ** 2 - w[1] ** 2 + w[1] ** 4  # noqa: E731
        w = jnp.array([0.01, 0.1])
        g = jax.grad(f)(w)
        tx = scale_by_hessian_free(0.5, curvature="hessian")
        u, state = tx.update(g, tx.init(w), w, value_fn=f)
        assert int(state.info.cg_status) == linalg.SolverStatus.NEGATIVE_CURVATURE
        np.testing.assert_allclose(u, g / 0.5, rtol=1e-14)
        assert float(f(w - u)) < float(f(w))


class TestDamping:
    def test_martens_rule(self):
        rho = jnp.array([-jnp.inf, jnp.nan, 0.1, 0.25, 0.5, 0.75, 0.76, 2.0])
        got = martens_damping_update(jnp.ones(()), rho)
        expected = [4.0, 4.0, 1.5, 1.0, 1.0, 1.0, 2.0 / 3.0, 2.0 / 3.0]
        np.testing.assert_allclose(got, expected, rtol=1e-15)

    def test_nan_trial_is_rejected(self):
        f = lambda w: jnp.sum((w - 10.0) ** 2) + jnp.where(w[0] > 2.0, jnp.nan, 0.0)  # noqa: E731
        tx = scale_by_hessian_free(1e-3)
        w = jnp.array([1.0, 0.0])
        step = jax.jit(lambda w, s: tx.update(jax.grad(f)(w), s, w, value_fn=f))
        u, state = step(w, tx.init(w))
        np.testing.assert_array_equal(u, 0.0)
        assert bool(state.info.rejected) and float(state.info.rho) == -np.inf
        np.testing.assert_allclose(state.damping, 4e-3, rtol=1e-15)
        values = [float(f(w))]
        for _ in range(40):
            u, state = step(w, state)
            w = w - u
            values.append(float(f(w)))
        assert np.all(np.isfinite(w)) and float(w[0]) <= 2.0
        assert np.all(np.diff(values) <= 0.0) and values[-1] < values[0]

    def test_bad_options(self):
        with pytest.raises(ValueError, match="curvature"):
            scale_by_hessian_free(curvature="fisher")
        with pytest.raises(ValueError, match="initial_damping"):
            scale_by_hessian_free(initial_damping=-1.0)
        with pytest.raises(ValueError, match="max_cg_steps"):
            hessian_free(max_cg_steps=0)
        with pytest.raises(TypeError, match="value_fn"):
            tx = scale_by_hessian_free()
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))


def mlp_problem():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jnp.linspace(-3.0, 3.0, 64)[:, None]
    y = jnp.sin(x[:, 0])
    params = {
        "w1": jax.random.normal(k1, (1, 16)),
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k2, (16, 1)) / 4.0,
        "b2": jnp.zeros(1),
    }

    def model(p, x):
        return (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]

    return params, x, y, model


def test_mlp_regression_beats_adam():
    params, x, y, model = mlp_problem()

    def train(opt, steps=30):
        def body(_, carry):
            p, state = carry
            # Per-step objective closing over its batch, built inside the jitted step.
            loss = composite_objective(
                lambda p: model(p, x), lambda out: 0.5 * jnp.mean((out - y) ** 2)
            )
            updates, state = opt.update(jax.grad(loss)(p), state, p, value_fn=loss)
            return optax.apply_updates(p, updates), state

        p, _ = jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, opt.init(p))))(params)
        return float(0.5 * jnp.mean((model(p, x) - y) ** 2))

    hf_loss, adam_loss = train(hessian_free(max_cg_steps=50)), train(optax.adam(1e-2))
    assert hf_loss < 0.5 * adam_loss, (hf_loss, adam_loss)


class TestOptaxProtocol:
    @pytest.mark.parametrize("structured", [False, True])
    def test_no_recompile_on_second_update(self, structured):
        traces = []
        loss = least_squares_objective(counting(residual, traces))
        value_fn = loss if structured else (lambda w: loss(w))
        tx = scale_by_hessian_free()
        assert_second_update_does_not_retrace(tx, value_fn, jnp.array([0.7, -0.4]), traces)

    def test_inject_hyperparams(self):
        opt = optax.inject_hyperparams(hessian_free)(
            initial_damping=1.0, warm_start_decay=0.95, max_cg_steps=10
        )
        loss = least_squares_objective(residual)
        traces = []

        @jax.jit
        def step(w, state):
            traces.append(1)
            updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
            return optax.apply_updates(w, updates), state

        w = jnp.array([0.7, -0.4])
        state = opt.init(w)
        w, state = step(w, state)
        state.hyperparams["warm_start_decay"] = 0.0 * state.hyperparams["warm_start_decay"]
        state.hyperparams["max_cg_steps"] = state.hyperparams["max_cg_steps"] + 5
        for _ in range(40):
            w, state = step(w, state)
        assert len(traces) == 1
        np.testing.assert_allclose(residual(w), 0.0, atol=1e-10)

    def test_vmap_over_problems_and_apply_if_finite(self):
        targets = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [2.0, 2.0, -2.0]])
        opt = optax.apply_if_finite(hessian_free(1e-3), max_consecutive_errors=2)

        def solve(target):
            f = lambda w: jnp.sum((w - target) ** 2) + jnp.sum((w - target) ** 4)  # noqa: E731

            def body(_, carry):
                w, state = carry
                updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
                return optax.apply_updates(w, updates), state

            w = jnp.zeros(3)
            return jax.lax.fori_loop(0, 30, body, (w, opt.init(w)))[0]

        got = jax.jit(jax.vmap(solve))(targets)
        np.testing.assert_allclose(got, targets, atol=1e-6)
        np.testing.assert_allclose(got[2], jax.jit(solve)(targets[2]), rtol=1e-12)

    @pytest.mark.parametrize("structured", [False, True])
    def test_float32_smoke(self, structured):
        loss = least_squares_objective(residual)
        value_fn = loss if structured else (lambda w: loss(w))
        opt = hessian_free()
        w = jnp.array([0.7, -0.4], jnp.float32)
        state = opt.init(w)
        step = jax.jit(lambda w, s: opt.update(jax.grad(value_fn)(w), s, w, value_fn=value_fn))
        for _ in range(40):
            u, state = step(w, state)
            w = optax.apply_updates(w, u)
        assert w.dtype == jnp.float32 and state[0].damping.dtype == jnp.float32
        np.testing.assert_allclose(residual(w), 0.0, atol=F32_ATOL)
