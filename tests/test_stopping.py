"""The default stopping tests of ``minimize`` / ``least_squares`` (float64).

The gradient test is scale-invariant (MINPACK's cosine for least squares, the
relative gradient for ``minimize``; see ``newtonjax._solve._settings.default_tolerances``):
scaling f by a constant and x by a diagonal matrix gives the same iterations and
status. Scale factors are powers of two, so the scaled solve is the original one
in exact arithmetic and in floating point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import newtonjax as nj

jax.config.update("jax_enable_x64", True)

T = jnp.linspace(0.0, 4.0, 30)
Y = 2.0 * jnp.exp(-0.7 * T) + 0.5 * jnp.sin(1.9 * T) + 0.01 * jnp.cos(13.0 * T)
D = jnp.array([2.0**-6, 2.0**5, 2.0**-3, 2.0**8])  # x = D·z
C = 2.0**-20  # f -> C·f: residuals times 2**-10


def residual(p):
    return p[0] * jnp.exp(-p[1] * T) + p[2] * jnp.sin(p[3] * T) - Y


def scaled_residual(z):
    return jnp.sqrt(C) * residual(z / D)


X0 = jnp.array([1.0, 1.0, 1.0, 2.0])


def cosine(params):
    r = np.asarray(residual(params))
    jac = np.asarray(jax.jacfwd(residual)(params))
    g = jac.T @ r
    return np.max(np.abs(g) / (np.linalg.norm(jac, axis=0) * np.linalg.norm(r)))


@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_least_squares_is_invariant_to_scaling_f_and_x(method):
    a = nj.least_squares(residual, X0, method=method, gtol=1e-8, ftol=0.0, xtol=0.0)
    b = nj.least_squares(scaled_residual, X0 * D, method=method, gtol=1e-8, ftol=0.0, xtol=0.0)
    assert int(a.status) == int(b.status) == nj.Status.GTOL
    assert int(a.num_steps) == int(b.num_steps)
    np.testing.assert_allclose(b.params / D, a.params, rtol=1e-12)
    # The absolute test is not invariant: at the same point ‖∇f‖∞ differs by far.
    assert float(b.grad_norm) < 1e-3 * float(a.grad_norm)


@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_the_cosine_matches_a_hand_computation_at_the_returned_point(method):
    gtol = 1e-8
    res = nj.least_squares(residual, X0, method=method, gtol=gtol, ftol=0.0, xtol=0.0)
    assert int(res.status) == nj.Status.GTOL
    assert cosine(res.params) <= gtol
    # The test stopped the solve: the point before had not passed. Gauss–Newton
    # tests each new point; Levenberg–Marquardt tests the point its update starts
    # from (MINPACK's order, with the Jacobian it built there) and returns that point,
    # so there the returned point is the last one reached before the final update.
    k = int(res.num_steps) - (2 if method == "levenberg_marquardt" else 1)
    before = nj.least_squares(residual, X0, method=method, gtol=gtol, ftol=0.0,
                              xtol=0.0, maxiter=k)  # fmt: skip
    assert int(before.status) == nj.Status.MAX_STEPS
    assert cosine(before.params) > gtol
    if method == "levenberg_marquardt":
        last = nj.least_squares(residual, X0, method=method, gtol=gtol, ftol=0.0,
                                xtol=0.0, maxiter=k + 1)  # fmt: skip
        np.testing.assert_array_equal(last.params, res.params)


def test_a_small_residual_is_solved_to_its_floor_at_defaults():
    # f* ~ 1e-12: an absolute ‖∇f‖∞ <= 1e-10 would stop early; the cosine does not.
    y = 2.0 * jnp.exp(-0.7 * T) + 1e-7 * jnp.cos(13.0 * T)
    fn = lambda p: p[0] * jnp.exp(-p[1] * T) - y  # noqa: E731
    res = nj.least_squares(fn, jnp.array([1.0, 1.0]))
    ref = nj.least_squares(fn, jnp.array([1.0, 1.0]), gtol=0.0, maxiter=500)
    assert bool(res.success)
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-9)


def quartic(x, scale):
    # A convex problem where Newton's iterates do not depend on f's or x's scale.
    z = x / scale
    return jnp.exp(z[0] - 1.0) + jnp.sum((z - 2.0) ** 2) + 0.5 * jnp.sum(z[1:] * z[:-1]) + 1.0


def test_minimize_is_invariant_to_scaling_f_and_x():
    d = jnp.array([2.0**4, 2.0**-7, 2.0**2])
    x0 = jnp.array([0.5, -1.0, 3.0])
    kw = dict(method="newton", gtol=1e-8, ftol=0.0, xtol=0.0)
    a = nj.minimize(quartic, x0, args=(jnp.ones(3),), **kw)
    b = nj.minimize(lambda x, s: C * quartic(x, s), x0 * d, args=(d,), **kw)
    assert int(a.status) == int(b.status) == nj.Status.GTOL
    assert int(a.num_steps) == int(b.num_steps)
    np.testing.assert_allclose(b.params / d, a.params, rtol=1e-12)
    # The relative gradient at the returned point, by hand.
    g, x = np.asarray(a.grad), np.asarray(a.params)
    rel = np.max(np.abs(g) * np.maximum(np.abs(x), np.abs(np.asarray(x0))) / abs(float(a.value)))
    assert rel <= 1e-8


def test_an_explicit_absolute_tolerance_still_works():
    for gtol_abs in (1e-3, 1e-6):
        res = nj.least_squares(residual, X0, gtol=0.0, gtol_abs=gtol_abs, ftol=0.0, xtol=0.0)
        assert int(res.status) == nj.Status.GTOL
        assert float(res.grad_norm) <= gtol_abs
        assert cosine(res.params) > 1e-10  # the cosine did not stop it
    res = nj.minimize(quartic, jnp.zeros(3), args=(jnp.ones(3),), gtol=0.0, gtol_abs=1e-9,
                      ftol=0.0, xtol=0.0)  # fmt: skip
    assert int(res.status) == nj.Status.GTOL and float(res.grad_norm) <= 1e-9
    with pytest.raises(ValueError, match="gtol_abs"):
        nj.minimize(quartic, jnp.zeros(3), args=(jnp.ones(3),), gtol_abs=-1.0)


def test_a_start_at_the_solution_stops_at_once():
    sol = nj.least_squares(residual, X0, gtol=0.0, maxiter=500).params
    res = nj.least_squares(residual, sol, gtol=1e-6)
    assert int(res.num_steps) == 0 and int(res.status) == nj.Status.GTOL


def test_the_default_iteration_cap_grows_with_n_up_to_1000():
    from newtonjax._solve._settings import default_maxiter

    # MINPACK's 100·(n + 1), capped: by hand.
    assert [default_maxiter(n) for n in (1, 2, 3, 9, 10, 10**6)] == [200, 300, 400, 1000,
                                                                     1000, 1000]  # fmt: skip
    # f = Σ exp(−x_i) keeps decreasing by a factor e per Newton step (x_i += 1) until
    # exp underflows near x = 745: with every tolerance 0 the solve runs to its cap.
    f = lambda x: jnp.sum(jnp.exp(-x))  # noqa: E731
    for n in (1, 2):
        res = nj.minimize(f, jnp.zeros(n), method="newton", gtol=0.0, ftol=0.0, xtol=0.0,
                          history=True)  # fmt: skip
        assert int(res.status) == nj.Status.MAX_STEPS
        assert int(res.num_steps) == 100 * (n + 1)
        assert res.history["value"].shape == (100 * (n + 1) + 1,)
        np.testing.assert_allclose(res.params, 100.0 * (n + 1), rtol=1e-12)
    res = nj.minimize(f, jnp.zeros(2), method="newton", gtol=0.0, ftol=0.0, xtol=0.0, maxiter=7)
    assert int(res.num_steps) == 7
    with pytest.raises(ValueError, match="maxiter must be an int >= 1 or None"):
        nj.minimize(f, jnp.zeros(2), maxiter=0)
