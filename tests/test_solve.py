"""minimize / least_squares: scipy agreement, vmap, implicit gradients, bad input."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize as so

import newtonjax as nj

# --- classic unconstrained test problems (Moré, Garbow & Hillstrom 1981) ---------


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def beale(x):
    return (
        (1.5 - x[0] + x[0] * x[1]) ** 2
        + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
        + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2
    )


def wood(x):
    return (
        100 * (x[1] - x[0] ** 2) ** 2
        + (1 - x[0]) ** 2
        + 90 * (x[3] - x[2] ** 2) ** 2
        + (1 - x[2]) ** 2
        + 10.1 * ((x[1] - 1) ** 2 + (x[3] - 1) ** 2)
        + 19.8 * (x[1] - 1) * (x[3] - 1)
    )


def helical_valley(x):
    theta = jnp.arctan2(x[1], x[0]) / (2 * jnp.pi)
    return 100 * ((x[2] - 10 * theta) ** 2 + (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1) ** 2) + x[2] ** 2


def powell_singular(x):
    return (
        (x[0] + 10 * x[1]) ** 2
        + 5 * (x[2] - x[3]) ** 2
        + (x[1] - 2 * x[2]) ** 4
        + 10 * (x[0] - x[3]) ** 4
    )


def brown_badly_scaled(x):
    return (x[0] - 1e6) ** 2 + (x[1] - 2e-6) ** 2 + (x[0] * x[1] - 2) ** 2


def freudenstein_roth(x):
    return (-13 + x[0] + ((5 - x[1]) * x[1] - 2) * x[1]) ** 2 + (
        -29 + x[0] + ((x[1] + 1) * x[1] - 14) * x[1]
    ) ** 2


def trigonometric(x):
    n = x.shape[0]
    i = jnp.arange(1, n + 1)
    return jnp.sum((n - jnp.sum(jnp.cos(x)) + i * (1 - jnp.cos(x)) - jnp.sin(x)) ** 2)


PROBLEMS = [
    ("rosenbrock", rosen, [-1.2, 1.0]),
    ("rosenbrock10", rosen, [-1.2, 1.0] * 5),
    ("beale", beale, [1.0, 1.0]),
    ("wood", wood, [-3.0, -1.0, -3.0, -1.0]),
    ("helical_valley", helical_valley, [-1.0, 0.0, 0.0]),
    ("powell_singular", powell_singular, [3.0, -1.0, 0.0, 1.0]),
    ("brown_badly_scaled", brown_badly_scaled, [1.0, 1.0]),
    ("freudenstein_roth", freudenstein_roth, [0.5, -2.0]),
    ("trigonometric10", trigonometric, [0.1] * 10),
]


def scipy_trust_exact(f, x0):
    g, h, fj = jax.jit(jax.grad(f)), jax.jit(jax.hessian(f)), jax.jit(f)
    return so.minimize(
        lambda x: float(fj(x)),
        x0,
        jac=lambda x: np.asarray(g(x)),
        hess=lambda x: np.asarray(h(x)),
        method="trust-exact",
        options={"gtol": 1e-10},
    )


def test_trust_region_agrees_with_scipy_trust_exact():
    total_scipy = total_nj = 0
    rows = []
    for name, f, x0 in PROBLEMS:
        x0 = np.asarray(x0, float)
        ref = scipy_trust_exact(f, x0)
        res = nj.minimize(f, jnp.asarray(x0), method="trust_region", maxiter=500)
        rows.append(
            f"{name}: scipy nit={ref.nit} f={ref.fun:.3e} | newtonjax nit={int(res.num_steps)} f={float(res.value):.3e}"
        )
        total_scipy += ref.nit
        total_nj += int(res.num_steps)
        # Brown's badly scaled function reaches its exact minimum (f ~ 1e-33) where
        # the gradient's rounding error (~eps·1e6) exceeds gtol: newtonjax reports
        # the rounding limit (STALLED) there; scipy runs to its iteration cap.
        assert bool(res.success) or int(res.status) == nj.Status.STALLED, (name, res.message)
        # The same minimum value: equal to rounding, or lower where scipy stalled.
        tol = 1e-10 * max(1.0, abs(ref.fun))
        assert float(res.value) <= ref.fun + tol, rows[-1]
    print("\n".join(rows))
    assert total_nj <= total_scipy, f"{total_nj} > {total_scipy} iterations in total"


@pytest.mark.parametrize("method", ["newton", "newton_cg", "hessian_free"])
@pytest.mark.parametrize(
    "name,f,x0", [p for p in PROBLEMS if p[0] in ("rosenbrock", "beale", "wood")]
)
def test_other_methods_reach_the_minimum(method, name, f, x0):
    res = nj.minimize(f, jnp.asarray(x0, float), method=method, maxiter=1000)
    assert bool(res.success), res.message
    np.testing.assert_allclose(float(res.value), 0.0, atol=1e-16)


@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_complex_residuals_are_their_real_and_imaginary_parts(method):
    # ½‖r‖² of a complex residual is ½‖[Re r, Im r]‖²: its Gauss–Newton matrix is
    # Re(JᴴJ) and its gradient Re(Jᴴr), as scipy's lm sees the stacked real residual.
    t = np.linspace(0.0, 1.0, 10)
    y = 2.0 * np.exp(0.7j * t) + 0.01 * (1 + 3j) * t

    def residual(x):
        return x[0] * jnp.exp(1j * x[1] * t) - y

    def stacked(x):
        r = x[0] * np.exp(1j * x[1] * t) - y
        return np.concatenate([r.real, r.imag])

    ref = so.least_squares(stacked, [1.0, 0.5], method="lm", xtol=1e-15, ftol=1e-15)
    res = nj.minimize(nj.least_squares_objective(residual), jnp.array([1.0, 0.5]), method=method)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-9)
    np.testing.assert_allclose(float(res.value), ref.cost, rtol=1e-9)


@pytest.mark.parametrize("subproblem", ["exact", "steihaug_cg", "dogleg"])
def test_trust_region_subproblem_option(subproblem):
    res = nj.minimize(rosen, jnp.array([-1.2, 1.0]), options={"subproblem": subproblem})
    assert bool(res.success)
    np.testing.assert_allclose(res.params, [1.0, 1.0], atol=1e-10)


class TestTransformability(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        solve = self.variant(lambda x0: nj.minimize(rosen, x0))
        res = solve(jnp.array([-1.2, 1.0]))
        ref = nj.minimize(rosen, jnp.array([-1.2, 1.0]))
        np.testing.assert_allclose(res.params, ref.params, rtol=1e-14)
        assert int(res.num_steps) == int(ref.num_steps)

    def test_repeated_calls_reuse_the_compiled_solve(self):
        traces = []

        def g(x, c):
            return jnp.sum((x - c) ** 2) + jnp.sum(x**4)

        def f(x, c):
            traces.append(None)  # runs only while JAX traces f
            return g(x, c)

        def residual(x, t, y):
            traces.append(None)
            return x[0] * jnp.exp(-x[1] * t) - y

        t = jnp.linspace(0.0, 1.0, 10)
        for x0, c in ((jnp.zeros(3), 1.0), (jnp.ones(3), 2.0)):
            res = nj.minimize(f, x0, args=(jnp.asarray(c),))
            ref = so.minimize(lambda x: float(g(jnp.asarray(x), c)), np.asarray(x0), tol=1e-12)
            np.testing.assert_allclose(res.params, ref.x, atol=1e-6)
            if c == 1.0:
                first, tight_steps = len(traces), int(res.num_steps)
        # One trace for the input checks (output shape), none for the solve.
        assert len(traces) == first + 1, "the second call with new data compiled again"
        for b in (1.0, 2.0):
            res = nj.least_squares(residual, jnp.ones(2), args=(t, 3.0 * jnp.exp(-b * t)))
            np.testing.assert_allclose(res.params, [3.0, b], rtol=1e-10)
            if b == 1.0:
                first = len(traces)
        # least_squares checks the residual's shape, then the objective's.
        assert len(traces) == first + 2
        # A new tolerance is a new solve (compiled again), not a stale one.
        loose = nj.minimize(f, jnp.zeros(3), args=(jnp.asarray(1.0),), gtol=0.0, gtol_abs=1e-2)
        assert 1e-10 < float(loose.grad_norm) <= 1e-2
        assert int(loose.num_steps) < tight_steps

    def test_vmap_1000_problems_equals_loop(self):
        # Curve fits y = a exp(-b t): 1000 data sets, each solved alone and batched.
        rng = np.random.default_rng(0)
        t = jnp.linspace(0.0, 2.0, 15)
        truth = rng.uniform([0.5, 0.2], [2.0, 2.0], size=(1000, 2))
        ys = truth[:, :1] * np.exp(-truth[:, 1:] * np.asarray(t)) + 0.01 * rng.standard_normal(
            (1000, 15)
        )
        x0s = jnp.asarray(truth * rng.uniform(0.6, 1.4, size=truth.shape))

        def residual(p, y):
            return p[0] * jnp.exp(-p[1] * t) - y

        solve = jax.jit(lambda x0, y: nj.least_squares(residual, x0, args=(y,)))
        batched = jax.jit(jax.vmap(lambda x0, y: nj.least_squares(residual, x0, args=(y,))))(
            x0s, jnp.asarray(ys)
        )
        assert bool(jnp.all(batched.success))
        for i in range(1000):
            single = solve(x0s[i], jnp.asarray(ys[i]))
            # Batched and single solves round differently, and f-based stopping
            # fixes x only to about sqrt(eps): agreement to 1e-7 is the precision.
            np.testing.assert_allclose(batched.params[i], single.params, rtol=1e-7)
            assert bool(single.success)

    def test_converged_problems_are_frozen_in_a_batch(self):
        # One problem starts at its minimum, the other needs many steps.
        targets = jnp.array([[1.0, 2.0], [3.0, -1.0]])

        def f(x, target):
            return jnp.sum((x - target) ** 4) + jnp.sum((x - target) ** 2)

        x0s = jnp.array([[1.0, 2.0], [-5.0, 8.0]])
        res = jax.vmap(lambda x0, tg: nj.minimize(f, x0, args=(tg,)))(x0s, targets)
        assert int(res.num_steps[0]) == 0 and int(res.status[0]) == nj.Status.GTOL
        assert int(res.num_steps[1]) > 3
        np.testing.assert_array_equal(res.params[0], x0s[0])


class TestWorkPool:
    @pytest.mark.parametrize("lanes", [1, 3, 7])
    def test_work_pool_matches_single_solves(self, lanes):
        # Fewer lanes than problems: finished lanes are refilled; x0 batched, data shared,
        # and one problem that starts at its minimum.
        target = jnp.array([1.0, -2.0])

        def f(x, target):
            return jnp.sum((x - target) ** 4) + jnp.sum(jnp.cosh(x - target))

        x0s = jnp.array(
            [
                [0.0, 0.0],
                [1.0, -2.0],
                [3.0, 1.0],
                [-4.0, 2.0],
                [0.5, 0.5],
                [10.0, -10.0],
                [2.0, 2.0],
            ]
        )
        batched = jax.jit(
            jax.vmap(lambda x0: nj.minimize(f, x0, args=(target,), batch_lanes=lanes))
        )(x0s)
        solve = jax.jit(lambda x0: nj.minimize(f, x0, args=(target,)))
        for i in range(x0s.shape[0]):
            single = solve(x0s[i])
            np.testing.assert_allclose(batched.params[i], single.params, rtol=1e-12, atol=1e-12)
            assert int(batched.num_steps[i]) == int(single.num_steps)
            assert int(batched.status[i]) == int(single.status)
        assert int(batched.num_steps[1]) == 0

    def test_pytree_float32_least_squares_pool_matches_single_solves(self):
        # A pool narrower than the batch with a dict of parameters in float32: the
        # start states and results travel packed by dtype (float32, int32, bool)
        # and must come back to the right problem and leaf.
        t = jnp.linspace(0.0, 2.0, 12, dtype=jnp.float32)

        def residual(p, y):
            return p["scale"] * jnp.exp(-p["rates"][0] * t) + p["rates"][1] * t - y

        rng = np.random.default_rng(3)
        truth = rng.uniform([0.5, 0.2, -0.5], [2.0, 1.5, 0.5], size=(9, 3)).astype(np.float32)
        ys = jnp.asarray(
            truth[:, :1] * np.exp(-truth[:, 1:2] * np.asarray(t)) + truth[:, 2:] * np.asarray(t)
        )
        x0s = {
            "scale": jnp.ones((9,), jnp.float32),
            "rates": jnp.tile(jnp.array([0.7, 0.0], jnp.float32), (9, 1)),
        }
        # Zero residuals in float32: the cosine test cannot fire at f's rounding floor,
        # where the last iterations' count depends on rounding (vmapped or not), so
        # an absolute test ends these solves before the floor.
        ls = lambda x0, y, **kw: nj.least_squares(residual, x0, args=(y,), gtol_abs=1e-5, **kw)  # noqa: E731
        batched = jax.jit(jax.vmap(lambda x0, y: ls(x0, y, batch_lanes=4)))(x0s, ys)
        solve = jax.jit(ls)
        for i in range(9):
            single = solve(jax.tree.map(lambda a, i=i: a[i], x0s), ys[i])
            for key in ("scale", "rates"):
                assert batched.params[key].dtype == jnp.float32
                np.testing.assert_allclose(
                    batched.params[key][i], single.params[key], rtol=1e-5, atol=1e-6
                )
            assert int(batched.num_steps[i]) == int(single.num_steps)
            assert int(batched.status[i]) == int(single.status)
            assert bool(batched.success[i]) == bool(single.success)
        np.testing.assert_allclose(batched.params["scale"], truth[:, 0], rtol=1e-3)

    def test_implicit_gradient_under_vmap(self):
        def f(x, a):
            return jnp.sum(jnp.cosh(x - a)) + 0.1 * jnp.sum(x**4)

        def solve(a):
            return nj.minimize(f, jnp.zeros(2), args=(a,), batch_lanes=2).params

        a_batch = jnp.array([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.1]])
        got = jax.jit(jax.vmap(jax.jacobian(solve)))(a_batch)
        single = jax.jit(jax.jacobian(solve))
        for i in range(3):
            np.testing.assert_allclose(got[i], single(a_batch[i]), rtol=1e-10)


class TestImplicitDifferentiation:
    def test_grad_of_solution_matches_closed_form_and_finite_differences(self):
        # A well-conditioned fit, so that finite differences of the solution are
        # accurate: the solve error must stay far below h · |dx/dy|.
        t = jnp.linspace(0.0, 3.0, 12)

        def residual(p, y):
            return p[0] * jnp.exp(-p[1] * t) - y

        y = 2.0 * jnp.exp(-1.3 * t) + 0.05 * jnp.sin(7 * t)
        tight = {"gtol": 0.0, "gtol_abs": 1e-13, "ftol": 0.0, "xtol": 0.0}

        @jax.jit
        def solution(y):
            return nj.least_squares(residual, jnp.array([1.0, 1.0]), args=(y,), **tight).params

        jac = jax.jacobian(solution)(y)
        # Closed form: ∇ₓf = Jᵀr and ∂r/∂y = −I, so dx*/dy = H⁻¹Jᵀ with H = ∇²ₓ½‖r‖².
        x = solution(y)
        jr = jax.jacfwd(residual)(x, y)
        hess = jax.hessian(lambda p: 0.5 * jnp.sum(residual(p, y) ** 2))(x)
        np.testing.assert_allclose(jac, np.linalg.solve(hess, jr.T), rtol=1e-8, atol=1e-12)
        # Fourth-order central differences: truncation O(h⁴), solve noise O(eps/h).
        h = 1e-3

        def fd_column(i):
            at = lambda d: solution(y.at[i].add(d))  # noqa: E731
            return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)

        fd = np.stack([fd_column(i) for i in range(12)], axis=1)
        np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-9)

    def test_grad_of_value_and_params_under_minimize(self):
        def f(x, a):
            return jnp.sum(jnp.cosh(x - a)) + 0.5 * jnp.sum(x**2) * a[0] ** 2

        a = jnp.array([0.7, -0.4, 1.1])

        def loss(a):
            res = nj.minimize(f, jnp.zeros(3), args=(a,), method="newton")
            return jnp.sum(res.params**2) + 3.0 * res.value

        loss = jax.jit(loss)
        got = jax.jit(jax.grad(loss))(a)
        h = 1e-5
        fd = np.array([(loss(a.at[i].add(h)) - loss(a.at[i].add(-h))) / (2 * h) for i in range(3)])
        np.testing.assert_allclose(got, fd, rtol=1e-6)

    def test_singular_hessian_gives_finite_gradient(self):
        # f is flat along x[1]: the Hessian is singular at every minimizer.
        def f(x, a):
            return (x[0] - a) ** 2

        g = jax.grad(lambda a: nj.minimize(f, jnp.array([0.0, 3.0]), args=(a,)).params[0])(2.0)
        np.testing.assert_allclose(g, 1.0, rtol=1e-6)


class TestStatusAndOptions:
    def test_nonfinite_mid_solve_returns_last_good_params(self):
        # Gradient descent with a huge step jumps into the NaN region.
        def f(x):
            return jnp.where(jnp.abs(x[0]) < 3.0, jnp.sum((x - 2.5) ** 2), jnp.nan)

        res = nj.minimize(f, jnp.array([0.0, 0.0]), method=optax.sgd(10.0))
        assert int(res.status) == nj.Status.NONFINITE and not bool(res.success)
        np.testing.assert_array_equal(res.params, [0.0, 0.0])
        assert "non-finite" in res.message

    def test_maxiter_status(self):
        res = nj.minimize(rosen, jnp.array([-1.2, 1.0]), maxiter=3)
        assert int(res.status) == nj.Status.MAX_STEPS and int(res.num_steps) == 3

    def test_optax_transform_as_method(self):
        res = nj.minimize(
            lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3), method=optax.sgd(0.25), maxiter=500
        )
        assert bool(res.success)
        np.testing.assert_allclose(res.params, 1.0, atol=1e-9)

    def test_history(self):
        res = nj.minimize(rosen, jnp.array([-1.2, 1.0]), history=True, maxiter=100)
        k = int(res.num_steps)
        values = np.asarray(res.history["value"])
        assert values.shape == (101,) and np.all(np.isnan(values[k + 1 :]))
        np.testing.assert_allclose(values[0], rosen(jnp.array([-1.2, 1.0])))
        np.testing.assert_allclose(values[k], res.value)
        assert np.all(np.diff(values[: k + 1]) <= 0)
        assert np.all(np.asarray(res.history["damping_or_radius"][1 : k + 1]) > 0)

    def test_float32_defaults(self):
        res = nj.minimize(rosen, jnp.array([-1.2, 1.0], jnp.float32))
        assert res.params.dtype == jnp.float32 and bool(res.success)
        np.testing.assert_allclose(res.params, [1.0, 1.0], atol=1e-3)


class TestBadInput:
    def test_unknown_method_lists_choices(self):
        with pytest.raises(ValueError, match="'trust_region'.*'levenberg_marquardt'"):
            nj.minimize(rosen, jnp.zeros(2), method="bfgs")

    def test_nonfinite_x0_and_args(self):
        with pytest.raises(ValueError, match="x0 has 1 non-finite"):
            nj.minimize(rosen, jnp.array([jnp.nan, 1.0]))
        with pytest.raises(ValueError, match="args"):
            nj.least_squares(lambda p, y: p - y, jnp.zeros(2), args=(jnp.array([1.0, jnp.inf]),))

    def test_maxiter_and_tolerances(self):
        with pytest.raises(ValueError, match="maxiter"):
            nj.minimize(rosen, jnp.zeros(2), maxiter=0)
        with pytest.raises(ValueError, match="gtol"):
            nj.minimize(rosen, jnp.zeros(2), gtol=-1.0)

    def test_residual_shape_and_type(self):
        with pytest.raises(ValueError, match="no residuals"):
            nj.least_squares(lambda p: jnp.zeros((0,)), jnp.zeros(2))
        with pytest.raises(TypeError, match="floating-point residuals"):
            nj.least_squares(lambda p: jnp.arange(3), jnp.zeros(2))
        with pytest.raises(ValueError, match="scalar"):
            nj.minimize(lambda p: p**2, jnp.zeros(2))

    def test_structured_method_needs_structured_objective(self):
        with pytest.raises(TypeError, match="least_squares_objective"):
            nj.minimize(rosen, jnp.zeros(2), method="levenberg_marquardt")

    def test_integer_x0(self):
        with pytest.raises(TypeError, match="floating-point"):
            nj.minimize(rosen, jnp.zeros(2, jnp.int32))


class TestSolvePackage:
    def test_status_family_shares_codes_and_messages(self):
        from newtonjax._status import CODES

        solver, solve = nj.linalg.SolverStatus, nj.Status
        assert int(solve.MAX_STEPS) == int(solver.MAX_STEPS) == CODES["MAX_STEPS"]
        assert int(solve.NONFINITE) == int(solver.NONFINITE) == CODES["NONFINITE"]
        assert int(solve.GTOL) == int(solver.CONVERGED)
        # No code means two different outcomes across the family.
        names = {int(m): m.name for m in solver}
        for m in solve:
            assert names.get(int(m), m.name) in (m.name, "CONVERGED"), m
        assert all(m.message for m in (*solver, *solve))
        assert solve.describe(np.array([0, 1])) == [solve.GTOL.message, solve.MAX_STEPS.message]

    def test_subproblem_failure_ends_the_solve_with_its_status(self):
        # ∇f is finite everywhere but its derivative (the Hessian) is NaN: the
        # exact trust-region subproblem fails at every step.
        @jax.custom_jvp
        def zero(x):  # 0, with a NaN derivative
            return jnp.zeros_like(x)

        zero.defjvp(lambda p, t: (zero(p[0]), jnp.nan * t[0]))

        @jax.custom_jvp
        def flat(x):  # 0 with gradient zero(x) = 0 and a NaN Hessian
            return jnp.zeros((), x.dtype)

        flat.defjvp(lambda p, t: (flat(p[0]), jnp.sum(zero(p[0]) * t[0])))

        def f(x):
            return jnp.sum(x**2) + flat(x)

        res = nj.minimize(f, jnp.array([1.0, 2.0]), method="trust_region")
        assert int(res.status) == nj.Status.SUBPROBLEM_FAILED and not bool(res.success)
        assert int(res.subproblem_status) == nj.linalg.SolverStatus.NONFINITE
        assert "subproblem" in res.message and "non-finite" in res.message
        np.testing.assert_array_equal(res.params, [1.0, 2.0])

    def test_method_table_describes_each_method_once(self):
        from newtonjax._solve import METHODS

        assert set(METHODS) == {
            "newton", "newton_cg", "trust_region", "gauss_newton", "levenberg_marquardt",
            "hessian_free",
        }  # fmt: skip
        structured = {k for k, m in METHODS.items() if m.needs_structure}
        assert structured == {"gauss_newton", "levenberg_marquardt"}
        assert {k for k, m in METHODS.items() if m.carries_values} == {
            "trust_region", "levenberg_marquardt",
        }  # fmt: skip
        assert METHODS["trust_region"].dense_products(5, {}) == 5
        assert METHODS["trust_region"].dense_products(5000, {}) == 0  # Steihaug–CG
        assert METHODS["levenberg_marquardt"].dense_products(4, {}) == 5  # + acceleration
        # Each record builds an optax rule; the runner's registry reads the table.
        assert isinstance(METHODS["newton"](3), optax.GradientTransformation)
        from newtonjax.experiments import optimizers

        assert set(optimizers.STRUCTURED) == structured

    def test_settings_are_frozen_hashable_and_the_cache_key(self):
        from newtonjax._solve import Settings
        from newtonjax._solve._settings import make_settings

        kwargs = dict(gtol=None, ftol=None, xtol=1e-9, maxiter=50, stall_limit=25,
                      history=False, verbose=False, batch_lanes=None)  # fmt: skip
        a = make_settings("minimize", jnp.float64, **kwargs)
        b = make_settings("minimize", jnp.float64, **kwargs)
        assert a == b and hash(a) == hash(b) and a.gtol == 1e-10 and a.xtol == 1e-9
        assert make_settings("minimize", jnp.float32, **kwargs).gtol == 1e-5
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.maxiter = 3
        assert not Settings(jnp.asarray(1e-3), 0.0, 0.0).hashable()

    def test_no_private_jax_imports(self):
        import pathlib

        root = pathlib.Path(nj.__file__).parent
        for path in root.rglob("*.py"):
            assert "jax._src" not in path.read_text(), path

    def test_solve_inside_jit_closing_over_a_tracer_is_not_cached(self):
        # The objective closes over a jit tracer (not passed in args): the eager
        # cache must not keep it, and the solve runs inside the enclosing jit.
        @jax.jit
        def solve(c):
            return nj.minimize(lambda x: jnp.sum((x - c) ** 2), jnp.zeros(2)).params

        np.testing.assert_allclose(solve(jnp.array(1.5)), [1.5, 1.5], rtol=1e-10)
        np.testing.assert_allclose(solve(jnp.array(-0.5)), [-0.5, -0.5], rtol=1e-10)
