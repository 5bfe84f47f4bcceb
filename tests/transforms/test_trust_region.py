"""Trust-region transform: convergence, monotone loss, NaN handling, optax protocol."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import newtonjax as nj
from newtonjax.linalg import SolverStatus

SUBPROBLEMS = ["exact", "steihaug_cg", "dogleg", "cauchy"]


def rosenbrock(w):
    return jnp.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def run(opt, f, w0, steps):
    state = opt.init(w0)

    @jax.jit
    def step(w, state):
        updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
        return optax.apply_updates(w, updates), state

    values, infos = [float(f(w0))], []
    w = w0
    for _ in range(steps):
        w, state = step(w, state)
        values.append(float(f(w)))
        infos.append(state[0].info)
    return w, state, np.array(values), infos


def run_scan(opt, f, w0, steps):
    """``steps`` updates in one compiled scan; returns the final point and all values."""

    def body(carry, _):
        w, state = carry
        u, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
        w = optax.apply_updates(w, u)
        return (w, state), f(w)

    (w, _), values = jax.jit(lambda w: jax.lax.scan(body, (w, opt.init(w)), None, length=steps))(w0)
    return w, np.concatenate([[float(f(w0))], np.asarray(values)])


@pytest.mark.parametrize("subproblem", SUBPROBLEMS)
def test_rosenbrock_converges_monotonically(subproblem):
    # The Cauchy point is steepest descent with a model line search: linear
    # convergence at rate ~(κ-1)/(κ+1) with κ ≈ 2500 at the minimizer, so it needs
    # tens of thousands of (cheap) steps to reach 1e-10.
    steps = 60_000 if subproblem == "cauchy" else 200
    w, values = run_scan(
        nj.trust_region(subproblem=subproblem), rosenbrock, jnp.array([-1.2, 1.0]), steps
    )
    assert np.max(np.abs(np.asarray(w) - 1.0)) < 1e-10
    assert np.all(np.diff(values) <= 0.0), "the loss increased on an accepted step"


@pytest.mark.parametrize("subproblem", ["exact", "steihaug_cg", "dogleg"])
def test_rosenbrock_fast_subproblems_reach_1e10(subproblem):
    w, _, values, _ = run(
        nj.trust_region(subproblem=subproblem), rosenbrock, jnp.array([-1.2, 1.0]), 100
    )
    assert np.max(np.abs(np.asarray(w) - 1.0)) < 1e-10
    assert values[-1] < 1e-20


def test_exact_step_matches_closed_form_quadratic():
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    f = lambda w: 0.5 * w @ jnp.asarray(a) @ w  # noqa: E731
    w0 = jnp.array([10.0, -4.0])
    tx = nj.scale_by_trust_region(initial_radius=100.0)
    u, state = tx.update(jax.grad(f)(w0), tx.init(w0), w0, value_fn=f)
    np.testing.assert_allclose(u, w0, rtol=1e-12)  # full Newton step: -u lands on 0
    np.testing.assert_allclose(state.info.rho, 1.0, rtol=1e-12)
    # N&W's rule grows the radius only for boundary steps: this one was interior.
    tx = nj.scale_by_trust_region(initial_radius=100.0, scaling="none")
    u, state = tx.update(jax.grad(f)(w0), tx.init(w0), w0, value_fn=f)
    np.testing.assert_allclose(u, w0, rtol=1e-12)
    np.testing.assert_allclose(state.radius, 100.0)


class TestAutomaticInitialRadius:
    """``initial_radius=None``: the exact subproblem starts from the Newton step."""

    @staticmethod
    def logistic(w):
        x = jnp.array([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0], [-1.5, 0.3, 0.7], [2.0, 1.0, 1.0]])
        y = jnp.array([1.0, -1.0, 1.0, 1.0])
        return jnp.mean(jax.nn.softplus(-y * (x @ w))) + 0.05 * jnp.dot(w, w)

    def test_first_step_is_the_newton_step_and_sets_the_radius(self):
        f, w0 = self.logistic, jnp.zeros(3)
        g, hess = jax.grad(f)(w0), jax.hessian(f)(w0)
        newton = np.linalg.solve(np.asarray(hess), -np.asarray(g))
        tx = nj.scale_by_trust_region()
        state = tx.init(w0)
        assert float(state.radius) == np.inf
        u, state = tx.update(g, state, w0, value_fn=f)
        np.testing.assert_allclose(-u, newton, rtol=1e-12)
        # Δ₀ = ‖D p_N‖ with D = sqrt|diag H| (the scaled norm), so the step lies on
        # the boundary; a good step doubles it.
        d = np.sqrt(np.abs(np.diag(np.asarray(hess))))
        assert float(state.info.rho) > 0.75
        np.testing.assert_allclose(state.info.step_norm, np.linalg.norm(d * newton), rtol=1e-12)
        np.testing.assert_allclose(state.radius, 2.0 * np.linalg.norm(d * newton), rtol=1e-12)
        np.testing.assert_allclose(state.scale, d, rtol=1e-12)
        # Unscaled, the same step and Δ₀ = ‖p_N‖.
        tx = nj.scale_by_trust_region(scaling="none")
        u, state = tx.update(g, tx.init(w0), w0, value_fn=f)
        np.testing.assert_allclose(-u, newton, rtol=1e-12)
        np.testing.assert_allclose(state.radius, 2.0 * np.linalg.norm(newton), rtol=1e-12)

    def test_bad_newton_step_shrinks_by_interpolation(self):
        # log-cosh far from its minimum: the Newton step overshoots and is rejected.
        f = lambda w: jnp.sum(jnp.log(jnp.cosh(w - 1.2)))  # noqa: E731
        w0 = jnp.array([-1.0, -1.5])
        g, hess = jax.grad(f)(w0), jax.hessian(f)(w0)
        d = np.sqrt(np.abs(np.diag(np.asarray(hess))))
        newton = np.linalg.solve(np.asarray(hess), -np.asarray(g))
        tx = nj.scale_by_trust_region()
        u, state = tx.update(g, tx.init(w0), w0, value_fn=f)
        assert bool(state.info.rejected)
        np.testing.assert_array_equal(u, 0.0)
        # MINPACK: Δ ← t·‖D p_N‖ (here Δ₀ = ‖D p_N‖ < 10‖D p_N‖), t the minimizer of
        # the quadratic through f(w0), gᵀp and f(w0 + p), clamped to [0.1, 0.5].
        slope = float(np.asarray(g) @ newton)
        rise = float(f(w0 + newton) - f(w0))
        t = np.clip(-slope / (2.0 * (rise - slope)), 0.1, 0.5)
        np.testing.assert_allclose(state.radius, t * np.linalg.norm(d * newton), rtol=1e-12)
        # Unscaled: Nocedal & Wright's quarter.
        tx = nj.scale_by_trust_region(scaling="none")
        u, state = tx.update(g, tx.init(w0), w0, value_fn=f)
        assert bool(state.info.rejected)
        np.testing.assert_array_equal(u, 0.0)
        np.testing.assert_allclose(state.radius, 0.25 * np.linalg.norm(newton), rtol=1e-12)

    def test_interior_step_sets_the_radius_to_twice_its_scaled_length(self):
        # MINPACK: after an interior (λ = 0) step Δ ← 2‖D p‖, also downwards.
        f, w0 = self.logistic, jnp.zeros(3)
        g, hess = jax.grad(f)(w0), jax.hessian(f)(w0)
        d = np.sqrt(np.abs(np.diag(np.asarray(hess))))
        newton = np.linalg.solve(np.asarray(hess), -np.asarray(g))
        tx = nj.scale_by_trust_region(initial_radius=100.0)
        u, state = tx.update(g, tx.init(w0), w0, value_fn=f)
        np.testing.assert_allclose(-u, newton, rtol=1e-12)
        assert np.linalg.norm(d * newton) < 1.0
        np.testing.assert_allclose(state.radius, 2.0 * np.linalg.norm(d * newton), rtol=1e-12)

    @pytest.mark.parametrize("w0", [(0.5, 0.1), (0.01, 0.1)])
    def test_indefinite_start_scaled_cauchy_or_x0_others_radius_one(self, w0):
        f = lambda w: w[0] ** 2 - w[1] ** 2 + w[1] ** 4 + 0.3 * w[1]  # noqa: E731
        w0 = jnp.array(w0)  # ∇²f has a negative eigenvalue here
        g, hess = np.asarray(jax.grad(f)(w0)), np.asarray(jax.hessian(f)(w0))
        # Scaled exact subproblem, D = sqrt|diag H(w0)|: the length of the Cauchy
        # step of the scaled model (Dennis & Schnabel A6.4.1) where ĝᵀĤĝ > 0 (the
        # first start), else ‖D w0‖ (MINPACK; the second start).
        d = np.sqrt(np.abs(np.diag(hess)))
        gs, hs = g / d, hess / np.outer(d, d)
        curvature = gs @ hs @ gs
        assert (curvature > 0) == (float(w0[0]) == 0.5)
        if curvature > 0:
            exact_start = np.linalg.norm(gs) ** 3 / curvature
        else:
            exact_start = np.linalg.norm(d * np.asarray(w0))
        for sub in SUBPROBLEMS:
            auto = nj.scale_by_trust_region(subproblem=sub)
            given = exact_start if sub == "exact" else 1.0
            one = nj.scale_by_trust_region(initial_radius=given, subproblem=sub)
            u_auto, s_auto = auto.update(g, auto.init(w0), w0, value_fn=f)
            u_one, s_one = one.update(g, one.init(w0), w0, value_fn=f)
            np.testing.assert_allclose(u_auto, u_one, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(s_auto.radius, s_one.radius, rtol=1e-12)

    def test_stationary_start_falls_back_to_the_scaled_norm_of_x0(self):
        # g = 0: the Newton step has length 0, which must not become the radius;
        # Δ₀ = ‖D w‖ = 2 with D = sqrt(diag H) = (√2, √2) at w = (1, 1).
        f = lambda w: jnp.sum((w - 1.0) ** 2)  # noqa: E731
        w = jnp.ones(2)
        auto = nj.scale_by_trust_region()
        one = nj.scale_by_trust_region(initial_radius=2.0)
        _, s_auto = auto.update(jax.grad(f)(w), auto.init(w), w, value_fn=f)
        _, s_one = one.update(jax.grad(f)(w), one.init(w), w, value_fn=f)
        assert float(s_auto.radius) > 0
        np.testing.assert_allclose(s_auto.radius, s_one.radius, rtol=1e-15)

    def test_minimize_takes_newton_steps_on_a_convex_problem(self):
        # From w = 0 every step is the full Newton step: the same iterates as a
        # hand-written Newton loop.
        f, w = self.logistic, jnp.zeros(3)
        res = nj.minimize(f, w, method="trust_region", gtol=0.0, gtol_abs=1e-12, ftol=0.0, xtol=0.0)
        steps = 0
        while float(jnp.max(jnp.abs(jax.grad(f)(w)))) > 1e-12:
            w = w - jnp.linalg.solve(jax.hessian(f)(w), jax.grad(f)(w))
            steps += 1
        assert int(res.num_steps) == steps  # no rejected or shortened step
        np.testing.assert_allclose(res.params, w, rtol=1e-12, atol=1e-15)


def test_saddle_start_moves_off_saddle():
    f = lambda w: w[0] ** 2 - w[1] ** 2 + w[1] ** 4  # noqa: E731
    for sub in ("exact", "steihaug_cg"):
        w, _, values, _ = run(nj.trust_region(subproblem=sub), f, jnp.array([0.5, 0.0]), 60)
        # Exact: the hard case at the start puts the step along the y-axis eigenvector.
        if sub == "exact":
            np.testing.assert_allclose(jnp.abs(w), [0.0, 1 / np.sqrt(2.0)], atol=1e-9)
        assert np.all(np.diff(values) <= 0.0)


def test_nan_trial_is_rejected_and_radius_shrinks():
    # The objective is NaN outside |w| < 2: a long first step must be rejected.
    # log-cosh: the Newton step from far away overshoots by a factor sinh·cosh.
    f = lambda w: jnp.where(  # noqa: E731
        jnp.sum(w**2) < 4.0, jnp.sum(jnp.log(jnp.cosh(w - 1.2))), jnp.nan
    )
    w0 = jnp.array([-1.0, -1.0])
    tx = nj.scale_by_trust_region(initial_radius=10.0)
    state = tx.init(w0)
    u, state = tx.update(jax.grad(f)(w0), state, w0, value_fn=f)
    assert bool(state.info.rejected)
    np.testing.assert_array_equal(u, 0.0)
    assert float(state.info.rho) == -np.inf
    assert float(state.radius) < 10.0
    w, _, values, infos = run(nj.trust_region(initial_radius=10.0), f, w0, 40)
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w, [1.2, 1.2], atol=1e-12)
    assert any(bool(i.rejected) for i in infos)


class TestDiagonalScaling:
    """The exact subproblem's region ``‖D p‖ ≤ Δ`` with ``D_j = max_k sqrt|H_jj(θ_k)|``
    (Moré 1978 §6; Conn, Gould & Toint 2000 §6.7)."""

    D = jnp.array([2.0**-7, 2.0**6])  # x = D⁻¹ z: powers of two, exact in floating point

    def test_iterates_are_invariant_to_a_diagonal_rescaling_of_the_parameters(self):
        w0 = jnp.array([-1.2, 1.0])
        scaled = lambda z: rosenbrock(z / self.D)  # noqa: E731
        w, _, values, _ = run(nj.trust_region(), rosenbrock, w0, 25)
        z, _, values_z, _ = run(nj.trust_region(), scaled, w0 * self.D, 25)
        np.testing.assert_allclose(values_z, values, rtol=1e-9, atol=1e-300)
        np.testing.assert_allclose(z / self.D, w, rtol=1e-9)
        # Unscaled, the same rescaling changes the iterates.
        _, _, values_n, _ = run(nj.trust_region(scaling="none"), scaled, w0 * self.D, 25)
        assert not np.allclose(values_n, values, rtol=1e-3)

    def test_scale_is_the_running_max_of_the_hessian_diagonal(self):
        w0 = jnp.array([-1.2, 1.0])
        tx = nj.scale_by_trust_region()
        update = jax.jit(lambda g, s, x: tx.update(g, s, x, value_fn=rosenbrock))
        hessian = jax.jit(jax.hessian(rosenbrock))
        state, x, expected = tx.init(w0), w0, np.zeros(2)
        for _ in range(6):
            diag = np.abs(np.diag(np.asarray(hessian(x))))
            expected = np.maximum(expected, np.sqrt(diag))
            u, state = update(jax.grad(rosenbrock)(x), state, x)
            np.testing.assert_allclose(state.scale, expected, rtol=1e-12)
            x = x - u
        assert np.any(expected != np.sqrt(np.abs(np.diag(np.asarray(hessian(x))))))


@pytest.mark.parametrize("subproblem", ["exact", "steihaug_cg"])
def test_state_value_and_grad_are_at_the_updated_params(subproblem):
    # optax's convention (optax.value_and_grad_from_state): after an update the
    # state holds f and ∇f at params + updates, for accepted and rejected steps
    # (log-cosh from far away: the long first steps are rejected).
    f = lambda w: jnp.sum(jnp.log(jnp.cosh(w - 1.2)))  # noqa: E731
    tx = nj.trust_region(subproblem=subproblem, initial_radius=10.0)
    w = jnp.array([-1.0, -1.5])
    state = tx.init(w)
    seen = set()
    for _ in range(8):
        updates, state = tx.update(jax.grad(f)(w), state, w, value_fn=f)
        w = optax.apply_updates(w, updates)
        seen.add(bool(state[0].info.rejected))
        np.testing.assert_allclose(state[0].value, f(w), rtol=1e-14)
        np.testing.assert_allclose(state[0].grad, jax.grad(f)(w), rtol=1e-12, atol=1e-15)
        value, _ = optax.value_and_grad_from_state(f)(w, state=state)
        np.testing.assert_allclose(value, state[0].value, rtol=0)
    assert seen == {False, True}, seen


def test_steihaug_reports_cg_steps_and_status():
    w0 = jnp.array([-1.2, 1.0, 0.5, 0.3])
    _, state, _, infos = run(
        nj.trust_region(subproblem="steihaug_cg", initial_radius=0.1), rosenbrock, w0, 3
    )
    statuses = {int(i.subproblem_status) for i in infos}
    assert statuses <= {
        SolverStatus.CONVERGED,
        SolverStatus.BOUNDARY,
        SolverStatus.NEGATIVE_CURVATURE,
        SolverStatus.MAX_STEPS,
    }
    assert SolverStatus.BOUNDARY in statuses  # the small radius binds
    assert all(int(i.cg_steps) >= 1 for i in infos)


class TestProtocol(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_same_with_and_without_jit(self):
        tx = nj.trust_region(subproblem="steihaug_cg")
        w = jnp.array([-1.2, 1.0])
        state = tx.init(w)
        upd = self.variant(lambda g, s, p: tx.update(g, s, p, value_fn=rosenbrock))
        u, state = upd(jax.grad(rosenbrock)(w), state, w)
        u_ref, state_ref = tx.update(jax.grad(rosenbrock)(w), tx.init(w), w, value_fn=rosenbrock)
        np.testing.assert_allclose(u, u_ref, rtol=1e-12)
        np.testing.assert_allclose(state[0].radius, state_ref[0].radius)

    def test_vmap_over_problems_matches_loop(self):
        tx = nj.trust_region()
        shifts = jnp.array([0.0, 0.5, -0.3])

        def f(w, s):
            return rosenbrock(w - s)

        def solve(s):
            w = jnp.array([-1.2, 1.0])
            state = tx.init(w)

            def body(carry, _):
                w, state = carry
                u, state = tx.update(jax.grad(f)(w, s), state, w, value_fn=lambda p: f(p, s))
                return (optax.apply_updates(w, u), state), None

            (w, _), _ = jax.lax.scan(body, (w, state), None, length=60)
            return w

        batched = jax.jit(jax.vmap(solve))(shifts)
        for i, s in enumerate(shifts):
            np.testing.assert_allclose(batched[i], jax.jit(solve)(s), rtol=1e-12)
            np.testing.assert_allclose(batched[i], 1.0 + s, atol=1e-9)

    def test_no_recompile_and_inject_hyperparams(self):
        opt = optax.inject_hyperparams(nj.trust_region, static_args=("subproblem",))(
            initial_radius=1.0, subproblem="dogleg"
        )
        traces = []

        def f(w):
            traces.append(1)
            return rosenbrock(w)

        @jax.jit
        def step(w, state):
            updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
            return optax.apply_updates(w, updates), state

        w = jnp.array([-1.2, 1.0])
        w, state = step(w, opt.init(w))
        n = len(traces)
        for _ in range(60):
            w, state = step(w, state)
        assert len(traces) == n
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-9)

    def test_masked_and_extra_kwargs(self):
        def f(p, scale):
            return scale * jnp.sum((p["w"] - 2.0) ** 2) + jnp.sum(p["frozen"] ** 2)

        params = {"w": jnp.zeros(2), "frozen": jnp.ones(1)}
        opt = optax.masked(nj.trust_region(initial_radius=10.0), {"w": True, "frozen": False})
        state = opt.init(params)
        # masked passes only the selected leaves to the inner update; its value_fn
        # must take that sub-tree, so a masked trust region needs a matching value_fn.
        g = jax.grad(f)(params, 3.0)
        sub_f = lambda p, scale: f({"w": p["w"], "frozen": params["frozen"]}, scale)  # noqa: E731
        updates, state = opt.update(g, state, params, value_fn=sub_f, scale=3.0)
        new = optax.apply_updates(params, updates)
        np.testing.assert_allclose(new["w"], [2.0, 2.0], rtol=1e-12)

    def test_float32_smoke(self):
        w, _, values, _ = run(
            nj.trust_region(), rosenbrock, jnp.array([-1.2, 1.0], jnp.float32), 80
        )
        assert w.dtype == jnp.float32
        np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-3)

    def test_bad_options(self):
        with pytest.raises(ValueError, match="subproblem.*valid choices"):
            nj.trust_region(subproblem="newton")
        with pytest.raises(ValueError, match="initial_radius"):
            nj.trust_region(initial_radius=0.0)
        with pytest.raises(ValueError, match="eta"):
            nj.trust_region(eta=0.5)
        with pytest.raises(ValueError, match="scaling.*valid choices"):
            nj.trust_region(scaling="column")
        with pytest.raises(ValueError, match="scaling='diagonal' needs subproblem='exact'"):
            nj.trust_region(subproblem="steihaug_cg", scaling="diagonal")
