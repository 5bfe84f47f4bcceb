"""Gauss–Newton as an optax transform, against numpy.linalg.lstsq and explicit JᵀHJ solves."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from newtonjax._objectives import composite_objective, least_squares_objective
from newtonjax._transforms._gauss_newton import gauss_newton, scale_by_gauss_newton
from newtonjax._transforms._structured import LOOPED_JACOBIAN_MAX, residual_and_jacobian
from tests.transforms._helpers import assert_second_update_does_not_retrace, counting

jax.config.update("jax_enable_x64", True)

RTOL = 1e-12  # float64 direct solves against numpy
CG_RTOL = 1e-9  # float64 CG (cg_rtol=1e-13) against numpy
F32_ATOL = 1e-3


def linear_problem(m=20, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, n)), rng.normal(size=m)


def negate(tree):
    return jax.tree.map(lambda x: -x, tree)


class TestDirection(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("dense", "cg")
    def test_linear_least_squares_one_step_is_lstsq(self, solver):
        a, y = linear_problem()
        loss = least_squares_objective(lambda w: a @ w - y)
        w0 = jnp.asarray(np.random.default_rng(1).normal(size=5))
        tx = scale_by_gauss_newton(solver=solver, cg_rtol=1e-13)
        u, state = self.variant(lambda g, s, p: tx.update(g, s, p, value_fn=loss))(
            jax.grad(loss)(w0), tx.init(w0), w0
        )
        expected = np.linalg.lstsq(a, y, rcond=None)[0]
        tol = RTOL if solver == "dense" else CG_RTOL
        np.testing.assert_allclose(w0 - u, expected, rtol=tol, atol=tol)
        assert not bool(state.info.rank_deficient)
        if solver == "cg":
            assert 1 <= int(state.info.cg_steps) <= 6

    def test_pytree_params_one_step_is_lstsq(self):
        a, y = linear_problem(m=30, n=7, seed=2)

        def residual(p):
            w = jnp.concatenate([p["w"].ravel(), p["b"]])
            return a @ w - y

        loss = least_squares_objective(residual)
        params = {"w": jnp.ones((2, 3)), "b": jnp.array([0.5])}
        opt = gauss_newton()
        updates, _ = opt.update(jax.grad(loss)(params), opt.init(params), params, value_fn=loss)
        new = optax.apply_updates(params, updates)
        expected = np.linalg.lstsq(a, y, rcond=None)[0]
        np.testing.assert_allclose(new["w"].ravel(), expected[:6], rtol=RTOL)
        np.testing.assert_allclose(new["b"], expected[6:], rtol=RTOL)

    def test_rank_deficient_gives_minimum_norm_solution(self):
        rng = np.random.default_rng(3)
        a = rng.normal(size=(12, 3)) @ rng.normal(size=(3, 6))  # rank 3, n = 6
        y = rng.normal(size=12)
        loss = least_squares_objective(lambda w: a @ w - y)
        w0 = jnp.zeros(6)
        tx = scale_by_gauss_newton()
        u, state = tx.update(jax.grad(loss)(w0), tx.init(w0), w0, value_fn=loss)
        np.testing.assert_allclose(-u, np.linalg.pinv(a) @ y, rtol=1e-9, atol=1e-12)
        assert bool(state.info.rank_deficient)

    def test_wide_jacobian_with_damping(self):
        rng = np.random.default_rng(4)
        a, y = rng.normal(size=(3, 5)), rng.normal(size=3)  # m < n
        loss = least_squares_objective(lambda w: a @ w - y)
        w0 = jnp.asarray(rng.normal(size=5))
        g = jax.grad(loss)(w0)
        u, _ = scale_by_gauss_newton(damping=0.3).update(g, None, w0, value_fn=loss)
        np.testing.assert_allclose(u, np.linalg.solve(a.T @ a + 0.3 * np.eye(5), g), rtol=RTOL)

    @parameterized.parameters("dense", "cg")
    def test_composite_direction_is_explicit_ggn_solve(self, solver):
        rng = np.random.default_rng(5)
        x = jnp.asarray(rng.normal(size=(8, 3)))
        labels = jax.nn.one_hot(jnp.arange(8) % 4, 4)

        def model(w):
            return jnp.tanh(x @ w[:12].reshape(3, 4)) * w[12:]

        def output_loss(logits):
            return -jnp.sum(labels * jax.nn.log_softmax(logits))

        loss = composite_objective(model, output_loss)
        w = jnp.asarray(rng.normal(size=16))
        g = jax.grad(loss)(w)
        tx = scale_by_gauss_newton(damping=1e-2, solver=solver, cg_rtol=1e-13)
        u, _ = jax.jit(lambda g, s, w: tx.update(g, s, w, value_fn=loss))(g, tx.init(w), w)
        # Independent reference: dense J (jacfwd) and loss Hessian (jax.hessian).
        jac = np.asarray(jax.jacfwd(model)(w)).reshape(-1, 16)
        out = model(w)
        h = np.asarray(jax.hessian(output_loss)(out)).reshape(out.size, out.size)
        ggn = jac.T @ h @ jac
        expected = np.linalg.solve(ggn + 1e-2 * np.eye(16), np.asarray(g))
        tol = RTOL * 100 if solver == "dense" else CG_RTOL
        np.testing.assert_allclose(u, expected, rtol=tol, atol=tol * np.abs(expected).max())

    def test_extra_kwargs_reach_the_residual(self):
        a, y = linear_problem(seed=6)
        loss = least_squares_objective(lambda w, data: a @ w - data)
        w0 = jnp.zeros(5)
        opt = gauss_newton()
        g = jax.grad(loss)(w0, y)
        updates, _ = opt.update(g, opt.init(w0), w0, value_fn=loss, data=y, unused=1.0)
        expected = np.linalg.lstsq(a, y, rcond=None)[0]
        np.testing.assert_allclose(w0 + updates, expected, rtol=RTOL)


class TestErrors:
    def test_plain_callable_is_a_type_error_naming_the_objectives(self):
        tx = scale_by_gauss_newton()
        w = jnp.ones(2)
        with pytest.raises(TypeError, match="least_squares_objective") as err:
            tx.update(w, tx.init(w), w, value_fn=lambda p: jnp.sum(p**2))
        assert "composite_objective" in str(err.value)

    def test_missing_value_fn_and_bad_options(self):
        tx = scale_by_gauss_newton()
        with pytest.raises(TypeError, match="value_fn"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
        with pytest.raises(ValueError, match="solver"):
            scale_by_gauss_newton(solver="qr")
        with pytest.raises(ValueError, match="damping"):
            scale_by_gauss_newton(damping=-1.0)
        with pytest.raises(ValueError, match="max_cg_steps"):
            scale_by_gauss_newton(solver="cg", max_cg_steps=0)
        with pytest.raises(ValueError, match="linesearch"):
            gauss_newton(linesearch="armijo")


def rosenbrock_residual(w):
    return jnp.stack([10.0 * (w[1] - w[0] ** 2), 1.0 - w[0]])


class TestConvergence:
    @pytest.mark.parametrize("linesearch", [None, "backtracking", "zoom"])
    def test_rosenbrock_residual(self, linesearch):
        loss = least_squares_objective(rosenbrock_residual)
        opt = gauss_newton(linesearch=linesearch)

        @jax.jit
        def step(w, state):
            updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
            return optax.apply_updates(w, updates), state

        w = jnp.array([-1.2, 1.0])
        state = opt.init(w)
        values = [float(loss(w))]
        for _ in range(10):
            w, state = step(w, state)
            values.append(float(loss(w)))
        if linesearch == "zoom":
            # Strong Wolfe picks the first minimizer along the (curved) valley: slower
            # here, but every step decreases f.
            assert np.all(np.diff(values) < 0.0)
            return
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-12)
        if linesearch == "backtracking":
            assert np.all(np.diff(values) <= 0.0)


class TestOptaxProtocol:
    @pytest.mark.parametrize("solver", ["dense", "cg"])
    def test_no_recompile_on_second_update(self, solver):
        traces = []
        loss = least_squares_objective(counting(rosenbrock_residual, traces))
        tx = scale_by_gauss_newton(solver=solver)
        assert_second_update_does_not_retrace(tx, loss, jnp.array([-1.2, 1.0]), traces)

    def test_inject_hyperparams(self):
        opt = optax.inject_hyperparams(gauss_newton)(learning_rate=0.5, damping=0.1)
        loss = least_squares_objective(rosenbrock_residual)
        traces = []

        @jax.jit
        def step(w, state):
            traces.append(1)
            updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
            return optax.apply_updates(w, updates), state

        w = jnp.array([-1.2, 1.0])
        state = opt.init(w)
        w1, state = step(w, state)
        # One damped half step, against numpy.
        jac = np.asarray(jax.jacfwd(rosenbrock_residual)(w))
        g = jac.T @ np.asarray(rosenbrock_residual(w))
        expected = np.asarray(w) - 0.5 * np.linalg.solve(jac.T @ jac + 0.1 * np.eye(2), g)
        np.testing.assert_allclose(w1, expected, rtol=RTOL)
        state.hyperparams["learning_rate"] = 2.0 * state.hyperparams["learning_rate"]
        state.hyperparams["damping"] = 0.0 * state.hyperparams["damping"]
        for _ in range(20):
            w1, state = step(w1, state)
        assert len(traces) == 1
        np.testing.assert_allclose(w1, [1.0, 1.0], atol=1e-12)

    def test_apply_if_finite_and_vmap_over_problems(self):
        a, _ = linear_problem(m=10, n=3, seed=7)
        ys = jnp.asarray(np.random.default_rng(8).normal(size=(4, 10)))
        opt = optax.apply_if_finite(gauss_newton(), max_consecutive_errors=2)

        def solve(y):
            loss = least_squares_objective(lambda w: a @ w - y)
            w = jnp.zeros(3)
            state = opt.init(w)
            updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
            return optax.apply_updates(w, updates)

        got = jax.jit(jax.vmap(solve))(ys)
        expected = np.linalg.lstsq(a, np.asarray(ys).T, rcond=None)[0].T
        np.testing.assert_allclose(got, expected, rtol=RTOL)

    def test_chain_with_clipping_and_optax_line_search(self):
        loss = least_squares_objective(rosenbrock_residual)
        opt = optax.chain(
            scale_by_gauss_newton(),
            optax.clip_by_global_norm(1.0),
            optax.scale(-1.0),
            optax.scale_by_backtracking_linesearch(max_backtracking_steps=20),
        )
        w = jnp.array([-1.2, 1.0])
        state = opt.init(w)

        @jax.jit
        def step(w, state):
            value, g = jax.value_and_grad(loss)(w)
            updates, state = opt.update(g, state, w, value=value, grad=g, value_fn=loss)
            return optax.apply_updates(w, updates), state

        for _ in range(30):
            w, state = step(w, state)
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-10)

    @pytest.mark.parametrize("solver", ["dense", "cg"])
    def test_float32_smoke(self, solver):
        a, y = linear_problem()
        a32, y32 = jnp.asarray(a, jnp.float32), jnp.asarray(y, jnp.float32)
        loss = least_squares_objective(lambda w: a32 @ w - y32)
        w = jnp.zeros(5, jnp.float32)
        opt = gauss_newton(solver=solver)
        updates, _ = opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss)
        new = optax.apply_updates(w, updates)
        assert new.dtype == jnp.float32
        np.testing.assert_allclose(new, np.linalg.lstsq(a, y, rcond=None)[0], atol=F32_ATOL)


@pytest.mark.parametrize("n", [3, LOOPED_JACOBIAN_MAX + 5])
def test_residual_jacobian_against_jacfwd(n):
    # Both ways of forming J (one tangent per loop trip for small n, all at once
    # beyond): pytree parameters and residuals, a complex leaf as [Re, Im] rows, and
    # all zeros once an entry is not finite.
    rng = np.random.default_rng(n)
    a = jnp.asarray(rng.standard_normal((7, n)))
    x = jnp.asarray(rng.standard_normal(n)) * 0.3
    params = {"head": x[:2], "tail": x[2:]}

    def model(p):
        v = jnp.concatenate([p["head"], p["tail"]])
        return {"sin": jnp.sin(a @ v), "wave": jnp.exp(1j * v[:3]) * v[1]}

    def stacked(flat):  # the raveled (complex) residual as [Re, Im]
        out = jax.flatten_util.ravel_pytree(model(unravel(flat)))[0]
        return jnp.concatenate([out.real, out.imag])

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    residual, jac = residual_and_jacobian(model, params)
    np.testing.assert_allclose(jac, jax.jacfwd(stacked)(flat), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(residual["sin"], model(params)["sin"])
    bad = {"head": params["head"].at[0].set(jnp.inf), "tail": params["tail"]}
    np.testing.assert_array_equal(residual_and_jacobian(model, bad)[1], 0.0)
