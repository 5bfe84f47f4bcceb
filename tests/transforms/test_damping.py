"""Levenberg–Marquardt's damping rules against the formulas as their papers print them.

Nielsen (1999) and Madsen, Nielsen & Tingleff (2004), §3.2 (eq. 3.14, Alg. 3.16);
Moré (1978), "The Levenberg–Marquardt algorithm: implementation and theory" (§3 the
scaling, §7 and MINPACK's ``lmder`` the initial radius). The secular equation and
the radius update are tested in ``test_levenberg_marquardt.py``. Also the damped system
``(G + μD) x = g`` (``_structured``) against numpy's solve of the normal equations.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from newtonjax._transforms._damping import (
    damping_bounds,
    initial_radius,
    marquardt_scaling,
    nielsen_initial_damping,
    nielsen_update,
)

RTOL = 1e-15  # the rules are a few float64 operations


def mnt_alg_3_16(mu, nu, rho):
    """Madsen, Nielsen & Tingleff (2004), Alg. 3.16, the damping lines."""
    if rho > 0:
        return mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), 2.0
    return mu * nu, 2.0 * nu


@pytest.mark.parametrize("rho", [1e-3, 0.25, 0.5, 0.75, 0.99, 1.0, 3.0, -0.5, -np.inf])
@pytest.mark.parametrize("nu", [2.0, 8.0])
def test_nielsen_update_is_alg_3_16(rho, nu):
    mu = 0.37
    accepted = rho > 0  # eta = 0
    got = nielsen_update(jnp.asarray(mu), jnp.asarray(nu), jnp.asarray(rho), jnp.asarray(accepted))
    want = mnt_alg_3_16(mu, nu, rho)
    np.testing.assert_allclose([float(got[0]), float(got[1])], want, rtol=RTOL)


def test_nielsen_growth_is_capped():
    mu, nu = nielsen_update(1.0, jnp.asarray(2.0**30), jnp.asarray(-1.0), jnp.asarray(False))
    assert float(nu) == 2.0**30 and float(mu) == 2.0**30


def test_nielsen_initial_damping_is_tau_times_max_diagonal():
    # MNT (2004) eq. 3.14: μ₀ = τ · max_i (JᵀJ)_ii, at the first update only.
    lo, hi = damping_bounds(jnp.float64)
    diag = jnp.array([0.5, 7.0, 2.0])
    tau = 1e-3
    first = nielsen_initial_damping(jnp.asarray(tau), diag, jnp.asarray(True), lo, hi)
    later = nielsen_initial_damping(jnp.asarray(tau), diag, jnp.asarray(False), lo, hi)
    assert float(first) == pytest.approx(tau * 7.0, rel=RTOL)
    assert float(later) == tau
    zero = nielsen_initial_damping(jnp.asarray(tau), jnp.zeros(3), jnp.asarray(True), lo, hi)
    assert float(zero) == tau  # max diag = 0 counts as 1
    absolute = nielsen_initial_damping(jnp.asarray(tau), None, jnp.asarray(True), lo, hi)
    assert float(absolute) == tau
    assert float(nielsen_initial_damping(jnp.asarray(0.0), None, True, lo, hi)) == lo


def test_initial_radius_is_minpack_factor_times_scaled_norm():
    # lmder: delta = factor * ||diag * x||, or factor if that is zero.
    d = np.array([4.0, 0.25])
    x0 = np.array([1.0, -2.0])
    size = np.linalg.norm(np.sqrt(d) * x0)
    assert float(initial_radius(jnp.asarray(size), 100.0)) == pytest.approx(100.0 * size, rel=RTOL)
    assert float(initial_radius(jnp.asarray(0.0), 100.0)) == 100.0


def test_marquardt_scaling_is_running_max_with_a_floor():
    running = jnp.array([3.0, 0.0, 1e-20])
    got = np.asarray(marquardt_scaling(running))
    eps = np.finfo(np.float64).eps
    np.testing.assert_array_equal(got, [3.0, 3.0 * eps, 3.0 * eps])
    np.testing.assert_array_equal(np.asarray(marquardt_scaling(jnp.zeros(2))), [1.0, 1.0])


def test_damping_bounds():
    lo, hi = damping_bounds(jnp.float32)
    info = np.finfo(np.float32)
    assert lo == pytest.approx(np.sqrt(info.tiny)) and hi == pytest.approx(np.sqrt(info.max))


# ------------------------------------------------------------ geodesic acceleration


def test_acceleration_is_used_only_below_transtrum_sethna_ratio():
    from newtonjax._transforms._geodesic import accelerate

    step = jnp.array([1.0, 2.0])
    w = jnp.array([0.2, -0.4])
    v_len = jnp.linalg.norm(step)
    w_len = jnp.linalg.norm(w)
    ratio = 2.0 * float(w_len) / float(v_len)  # = 0.4
    used = accelerate(step, v_len, w, w_len, 0.75, lambda x: x, jnp.float64)
    assert bool(used.accelerated) and float(used.ratio) == pytest.approx(ratio, rel=RTOL)
    np.testing.assert_allclose(used.step, step + 0.5 * w, rtol=RTOL)  # move v + ½a, a = −w
    refused = accelerate(step, v_len, w, w_len, 0.3, lambda x: x, jnp.float64)
    assert not bool(refused.accelerated)
    np.testing.assert_array_equal(refused.step, step)
    nan = accelerate(step, v_len, w * jnp.nan, w_len * jnp.nan, 0.75, lambda x: x, jnp.float64)
    assert not bool(nan.accelerated) and float(nan.ratio) == np.finfo(np.float64).max


# ------------------------------------------- the damped system (G + μD) x = g


T = np.linspace(0.0, 2.0, 7)
Y = np.cos(T)


def _tree_residual(p):
    return p["a"][0] * jnp.exp(-p["b"] * T) + p["a"][1] - Y


def _tree_jacobian(p):
    """Closed-form Jacobian of ``_tree_residual`` in ravel order (a0, a1, b)."""
    a0, b = float(p["a"][0]), float(p["b"])
    e = np.exp(-b * T)
    return np.stack([e, np.ones_like(T), -a0 * T * e], axis=1)


@pytest.mark.parametrize("solver", ["spectral", "cg"])
def test_damped_system_solves_scaled_normal_equations(solver):
    """Both solves of (JᵀJ + μD) x = g on pytree params against numpy's solve."""
    import jax

    from newtonjax._objectives import least_squares_objective
    from newtonjax._transforms._structured import (
        CGSystem,
        SpectralSystem,
        dense_curvature,
        gradient_parts,
        structured_operator,
    )
    from newtonjax._tree import tree_ravel

    params = {"a": jnp.array([1.5, -0.2]), "b": jnp.array(0.7)}
    loss = least_squares_objective(_tree_residual)
    op, _ = structured_operator("test", loss, params, {})
    g = gradient_parts(jax.grad(loss)(params), jnp.float64)
    d = np.array([2.0, 0.5, 3.0])
    mu = 0.3
    if solver == "spectral":
        curv = dense_curvature(op, params, True, loss.bind()[0])
        system = SpectralSystem.build(curv, g, jnp.asarray(1.0 / np.sqrt(d)))
    else:
        options = dict(rtol=1e-14, max_steps=None)
        system = CGSystem(op, g, jnp.asarray(d), tree_ravel(params)[1], options)
    jac = _tree_jacobian(params)
    gtg = jac.T @ jac
    grad = jac.T @ np.asarray(_tree_residual(params))
    x = np.linalg.solve(gtg + mu * np.diag(d), grad)
    rhs = np.array([0.3, -1.0, 2.0])
    x_rhs = np.linalg.solve(gtg + mu * np.diag(d), rhs)

    velocity = system.velocity(jnp.asarray(mu))
    np.testing.assert_allclose(tree_ravel(velocity.step)[0], x, rtol=1e-10)
    np.testing.assert_allclose(velocity.length, np.sqrt(d @ x**2), rtol=1e-10)
    np.testing.assert_allclose(velocity.predicted, grad @ x - 0.5 * x @ gtg @ x, rtol=1e-10)
    w, w_length, _ = system.solve_rhs(jnp.asarray(rhs), jnp.asarray(mu))
    np.testing.assert_allclose(w, x_rhs, rtol=1e-10)
    np.testing.assert_allclose(w_length, np.sqrt(d @ x_rhs**2), rtol=1e-10)
