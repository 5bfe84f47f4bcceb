"""Differentiation through minimize / least_squares in every JAX mode.

References are independent of the implicit rule: closed forms of x*(a), JAX
autodiff of a closed-form solution (linear least squares), and central finite
differences of the solve itself.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import newtonjax as nj

RTOL = 1e-7  # the solves stop at ‖∇f‖∞ <= 1e-10 (float64 default)
TIGHT = {"gtol": 0.0, "gtol_abs": 1e-13, "ftol": 0.0, "xtol": 0.0}


# --- a separable quartic with a closed-form solution --------------------------
# f(x, a) = Σ (x − a)⁴/4 + ½ (x − 2a)²; with u = x − a each component solves
# u³ + u = a, so x*(a) = a + u(a) with u' = 1/(3u² + 1), u'' = −6 u u'³.


def quartic(x, a):
    return jnp.sum((x - a) ** 4) / 4 + 0.5 * jnp.sum((x - 2 * a) ** 2)


def cardano(a):
    """The real root of u³ + u − a = 0."""
    a = np.asarray(a, float)
    s = np.sqrt(a**2 / 4 + 1 / 27)
    return np.cbrt(a / 2 + s) + np.cbrt(a / 2 - s)


def quartic_closed_form(a):
    """x*, dx*/da, d²x*/da² (componentwise) and the optimal value."""
    u = cardano(a)
    du = 1 / (3 * u**2 + 1)
    d2u = -6 * u * du**3
    value = np.sum(u**4 / 4 + 0.5 * (u - np.asarray(a)) ** 2)
    return np.asarray(a) + u, 1 + du, d2u, value


A = jnp.array([0.3, -0.2, 0.5])


@functools.partial(jax.jit, static_argnames="method")
def quartic_solution(a, method="trust_region"):
    return nj.minimize(quartic, jnp.zeros(3), args=(a,), method=method).params


def sum_of_squares(a):
    return jnp.sum(quartic_solution(a) ** 2)


class TestClosedForm:
    def test_solution_matches_cardano(self):
        x, _, _, _ = quartic_closed_form(A)
        np.testing.assert_allclose(quartic_solution(A), x, rtol=1e-9)

    @pytest.mark.parametrize("mode", ["jacfwd", "jacrev"])
    @pytest.mark.parametrize("method", ["trust_region", "newton"])
    def test_jacobian(self, mode, method):
        _, dx, _, _ = quartic_closed_form(A)
        jac = getattr(jax, mode)(lambda a: quartic_solution(a, method))(A)
        np.testing.assert_allclose(jac, np.diag(dx), rtol=RTOL, atol=1e-12)

    def test_jvp_and_vjp(self):
        _, dx, _, _ = quartic_closed_form(A)
        direction = jnp.array([1.0, -2.0, 0.5])
        _, tangent = jax.jvp(quartic_solution, (A,), (direction,))
        np.testing.assert_allclose(tangent, dx * direction, rtol=RTOL)
        _, pullback = jax.vjp(quartic_solution, A)
        (cotangent,) = pullback(direction)
        np.testing.assert_allclose(cotangent, dx * direction, rtol=RTOL)

    @pytest.mark.parametrize(
        "hessian",
        [jax.hessian, lambda f: jax.jacrev(jax.jacrev(f))],
        ids=["fwd_over_rev", "rev_over_rev"],
    )
    def test_hessian_of_a_function_of_the_solution(self, hessian):
        # A reproducer: d²(Σ x*²)/da² = 2 diag(x'² + x x'').
        x, dx, d2x, _ = quartic_closed_form(A)
        got = jax.jit(hessian(sum_of_squares))(A)
        np.testing.assert_allclose(got, np.diag(2 * (dx**2 + x * d2x)), rtol=1e-6, atol=1e-10)

    @pytest.mark.slow
    def test_forward_over_forward(self):
        x, dx, d2x, _ = quartic_closed_form(A)
        got = jax.jit(jax.jacfwd(jax.jacfwd(sum_of_squares)))(A)
        np.testing.assert_allclose(got, np.diag(2 * (dx**2 + x * d2x)), rtol=1e-6, atol=1e-10)

    def test_value_first_and_second_derivatives(self):
        # value(a) = Σ u⁴/4 + ½(u − a)²; by the envelope theorem dvalue/da =
        # ∂f/∂a = −u³ − 2(x − 2a) = −u³ − 2(u − a), and its derivative follows.
        def value(a):
            return nj.minimize(quartic, jnp.zeros(3), args=(a,)).value

        u = cardano(A)
        du = 1 / (3 * u**2 + 1)
        np.testing.assert_allclose(value(A), quartic_closed_form(A)[3], rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.grad(value))(A), -(u**3) - 2 * (u - A), rtol=RTOL)
        second = np.diag(-3 * u**2 * du - 2 * (du - 1))
        np.testing.assert_allclose(jax.jit(jax.hessian(value))(A), second, rtol=1e-6, atol=1e-10)


# --- a pytree of parameters and arguments ---------------------------------------
# f(p, (c, {"s": s})) = ½ (w − c)² + ½ (b − s c)² + ½ ‖v − c·1‖²: w* = c, b* = s c, v* = c.


def pytree_objective(p, c, extra):
    s = extra["s"]
    return (
        0.5 * (p["w"] - c) ** 2
        + 0.5 * (p["b"] - s * c) ** 2
        + 0.5 * jnp.sum((p["v"] - c) ** 2)
        + 0.1 * (p["w"] - c) ** 4
    )


def test_pytree_params_and_args_in_every_mode():
    x0 = {"w": jnp.zeros(()), "b": jnp.zeros(()), "v": jnp.zeros(2)}

    def product(c, s):
        p = nj.minimize(pytree_objective, x0, args=(c, {"s": s}), method="newton").params
        return p["w"] * p["b"] + jnp.sum(p["v"])  # = s c² + 2c

    c, s = 0.7, 1.3
    np.testing.assert_allclose(product(c, s), s * c**2 + 2 * c, rtol=1e-12)
    grads = jax.jit(jax.grad(product, argnums=(0, 1)))(c, s)
    np.testing.assert_allclose(grads, (2 * s * c + 2, c**2), rtol=RTOL)
    fwd = jax.jit(jax.jacfwd(product, argnums=(0, 1)))(c, s)
    np.testing.assert_allclose(fwd, (2 * s * c + 2, c**2), rtol=RTOL)
    hess = jax.jit(jax.hessian(product, argnums=(0, 1)))(c, s)
    np.testing.assert_allclose(np.asarray(hess), [[2 * s, 2 * c], [2 * c, 0.0]], atol=1e-7)


# --- a valley of minimisers: singular Hessian at every solution -------------------


def valley(x, a):
    return (x[0] + x[1] - a) ** 2


class TestSingularHessian:
    @pytest.mark.parametrize("method", ["newton", "trust_region", "newton_cg"])
    def test_valley_in_every_mode(self, method):
        # Every branch of minimizers has x0 + x1 = a: its derivative is exactly 1.
        def total(a):
            return jnp.sum(
                nj.minimize(valley, jnp.array([0.0, 3.0]), args=(a,), method=method).params
            )

        for mode in (jax.grad, jax.jacfwd, jax.jacrev):
            np.testing.assert_allclose(jax.jit(mode(total))(2.0), 1.0, rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.hessian(total))(2.0), 0.0, atol=1e-12)

    def test_valley_tangent_is_minimum_norm(self):
        # H = 2[[1, 1], [1, 1]], −B ȧ = 2(1, 1) ȧ: the minimum-norm tangent is (½, ½).
        def solution(a):
            return nj.minimize(valley, jnp.array([0.0, 3.0]), args=(a,), method="newton").params

        jac = jax.jit(jax.jacrev(solution))(2.0)
        np.testing.assert_allclose(jac, [0.5, 0.5], rtol=1e-12)
        assert np.all(np.isfinite(jax.jit(jax.hessian(solution))(2.0)))

    def test_least_squares_valley(self):
        def total(a):
            res = nj.least_squares(
                lambda x, a: jnp.stack([x[0] + x[1] - a]), jnp.zeros(2), args=(a,)
            )
            return jnp.sum(res.params)

        np.testing.assert_allclose(jax.jit(jax.grad(total))(-1.5), 1.0, rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.jacfwd(total))(-1.5), 1.0, rtol=1e-12)

    def test_flat_direction_gives_finite_gradient(self):
        def f(x, a):
            return (x[0] - a) ** 2

        g = jax.grad(lambda a: nj.minimize(f, jnp.array([0.0, 3.0]), args=(a,)).params[0])(2.0)
        np.testing.assert_allclose(g, 1.0, rtol=1e-12)

    def test_cg_path_on_the_valley(self, monkeypatch):
        # Large problems solve the implicit system by CG from zero, which stays in
        # the range of H and so finds the minimum-norm tangent too.
        from newtonjax import _solve

        implicit = getattr(_solve, "_implicit", _solve)
        monkeypatch.setattr(implicit, "_DENSE_IMPLICIT_MAX", 0)

        def solution(a):
            return nj.minimize(valley, jnp.array([0.0, 3.0]), args=(a,), method="newton").params

        np.testing.assert_allclose(jax.jacrev(solution)(2.0), [0.5, 0.5], rtol=1e-10)
        np.testing.assert_allclose(jax.jacfwd(solution)(2.0), [0.5, 0.5], rtol=1e-10)


# --- least squares --------------------------------------------------------------


def _linear_fit():
    # r(p; M, y) = M p − y: p* = (MᵀM)⁻¹Mᵀy, nonlinear in M. Reference: JAX
    # differentiating the closed form.
    rng = np.random.default_rng(0)
    m = jnp.asarray(rng.standard_normal((8, 3)))
    y = jnp.asarray(rng.standard_normal(8))

    def solution(m, y):
        return nj.least_squares(lambda p, m, y: m @ p - y, jnp.zeros(3), args=(m, y)).params

    def closed(m, y):
        return jnp.linalg.solve(m.T @ m, m.T @ y)

    return m, y, solution, closed


class TestLeastSquares:
    @pytest.mark.parametrize(
        "mode", [jax.jacrev, pytest.param(jax.jacfwd, marks=pytest.mark.slow)],
        ids=["jacrev", "jacfwd"],
    )  # fmt: skip
    def test_linear_fit_matches_autodiff_of_the_normal_equations(self, mode):
        m, y, solution, closed = _linear_fit()
        got = jax.jit(mode(solution, argnums=(0, 1)))(m, y)
        ref = mode(closed, argnums=(0, 1))(m, y)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-8, atol=1e-12)

    @pytest.mark.slow
    def test_linear_fit_hessian_matches_the_normal_equations(self):
        m, y, solution, closed = _linear_fit()

        def scalar(fn):
            return lambda m, y: jnp.sum(jnp.sin(fn(m, y)))

        got = jax.jit(jax.hessian(scalar(solution), argnums=1))(m, y)
        ref = jax.hessian(scalar(closed), argnums=1)(m, y)
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10)

    @pytest.mark.slow
    def test_nonzero_residual_fit_matches_finite_differences(self):
        # A fit whose residual stays far from zero, so that JᵀJ is not the Hessian:
        # the data move with c (y = y0 + c·t), the fit is nonlinear in its parameters.
        t = jnp.linspace(0.0, 3.0, 12)
        y0 = 2.0 * jnp.exp(-1.3 * t) + 0.3 * jnp.sin(7 * t)

        @jax.jit
        def solution(c):
            res = nj.least_squares(
                lambda p, c: p[0] * jnp.exp(-p[1] * t) - (y0 + c * t), jnp.array([1.0, 1.0]),
                args=(c,), **TIGHT,
            )  # fmt: skip
            return res.params

        # Fourth-order central differences: truncation O(h⁴), solve noise O(eps/h)
        # (a nonzero residual limits x* to about sqrt(eps) through f).
        def fd(fn, c, h=1e-3):
            return (8 * (fn(c + h) - fn(c - h)) - (fn(c + 2 * h) - fn(c - 2 * h))) / (12 * h)

        c = 0.2
        jac_rev, jac_fwd = jax.jacrev(solution), jax.jacfwd(solution)
        np.testing.assert_allclose(jac_rev(c), fd(solution, c), rtol=1e-6)
        np.testing.assert_allclose(jac_fwd(c), jac_rev(c), rtol=1e-12)
        second = jax.jit(jax.jacfwd(jac_rev))(c)
        np.testing.assert_allclose(second, fd(jax.jit(jac_rev), c), rtol=1e-5)
        np.testing.assert_allclose(jax.jit(jax.jacrev(jac_rev))(c), second, rtol=1e-10)


# --- finite differences of a problem without closed form ---------------------------


def coupled_squares(x, a):
    # A square nonlinear system r(x, a) = 0 as a sum of squares: f* = 0, so the
    # solve reaches x* to rounding and finite differences of it are accurate.
    r = jnp.stack(
        [
            jnp.sinh(x[0] - a[0]) + 0.3 * x[1] ** 2,
            x[1] - a[1] + 0.2 * x[0] * x[2],
            x[2] ** 3 + x[2] - a[2] * (1 + 0.1 * x[0]),
        ]
    )
    return jnp.sum(r**2)


@jax.jit
def coupled_solution(a):
    res = nj.minimize(coupled_squares, jnp.zeros(3), args=(a,), **TIGHT)
    return res.params, res.grad_norm


def test_central_differences_every_mode():
    a = jnp.array([0.4, -0.3, 0.8])
    assert float(coupled_solution(a)[1]) <= 1e-13
    solution = lambda a: coupled_solution(a)[0]  # noqa: E731
    h = 1e-5
    fd = np.stack(
        [(solution(a.at[i].add(h)) - solution(a.at[i].add(-h))) / (2 * h) for i in range(3)],
        axis=1,
    )
    for mode in (jax.jacfwd, jax.jacrev):
        np.testing.assert_allclose(jax.jit(mode(solution))(a), fd, rtol=1e-8, atol=1e-10)


# --- batches ---------------------------------------------------------------------

BATCH = jnp.array([[0.3, -0.2, 0.5], [1.0, 0.5, -0.4], [-0.7, 0.1, 0.2], [0.0, 2.0, -1.0]])


def _batched_solution(lanes):
    def solution(a):
        return nj.minimize(
            quartic, jnp.zeros(3), args=(a,), method="newton", batch_lanes=lanes
        ).params

    return solution


@pytest.mark.parametrize("lanes", [None, 2], ids=["vmap", "pool"])
def test_derivatives_under_vmap_and_the_work_pool(lanes):
    solution = _batched_solution(lanes)
    dx = np.stack([np.diag(quartic_closed_form(a)[1]) for a in np.asarray(BATCH)])
    np.testing.assert_allclose(
        jax.jit(jax.vmap(jax.jacfwd(solution)))(BATCH), dx, rtol=RTOL, atol=1e-12
    )
    # Differentiating the batched solve itself (the pool runs inside the rule).
    total = lambda b: jnp.sum(jax.vmap(solution)(b))  # noqa: E731
    np.testing.assert_allclose(
        jax.jit(jax.grad(total))(BATCH), np.diagonal(dx, axis1=1, axis2=2), rtol=RTOL
    )


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [None, 2], ids=["vmap", "pool"])
def test_jacrev_and_hessian_under_vmap_and_the_work_pool(lanes):
    solution = _batched_solution(lanes)
    dx = np.stack([np.diag(quartic_closed_form(a)[1]) for a in np.asarray(BATCH)])
    np.testing.assert_allclose(
        jax.jit(jax.vmap(jax.jacrev(solution)))(BATCH), dx, rtol=RTOL, atol=1e-12
    )
    x, dx1, d2x, _ = zip(*(quartic_closed_form(a) for a in np.asarray(BATCH)), strict=True)
    hess = jax.jit(jax.vmap(jax.hessian(lambda a: jnp.sum(solution(a) ** 2))))(BATCH)
    ref = np.stack([np.diag(2 * (d**2 + xi * dd)) for xi, d, dd in zip(x, dx1, d2x, strict=True)])
    np.testing.assert_allclose(hess, ref, rtol=1e-6, atol=1e-10)
