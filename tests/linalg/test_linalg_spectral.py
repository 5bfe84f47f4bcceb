"""damped_spectral_solve against numpy: (G + μD) x = b for G = JᵀJ or a PSD matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from newtonjax.linalg import damped_spectral_solve

jax.config.update("jax_enable_x64", True)

RTOL = 1e-11  # float64, condition numbers below 1e4


def problem(m, n, seed, rank=None):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((m, n))
    if rank is not None:
        J = J[:, :rank] @ rng.standard_normal((rank, n))
    return J, rng.standard_normal(n), rng.uniform(0.5, 4.0, n)


@pytest.mark.parametrize("form", ["jacobian", "matrix"])
@pytest.mark.parametrize("shape", [(9, 4), (3, 6), (40, 12)])
@pytest.mark.parametrize("scaled", [False, True])
def test_solve_step_and_length_match_numpy(form, shape, scaled):
    J, g, d = problem(*shape, seed=sum(shape))
    G = J.T @ J
    D = d if scaled else np.ones_like(d)
    inv_sqrt = jnp.asarray(1.0 / np.sqrt(d)) if scaled else None
    given = {"jacobian": jnp.asarray(J)} if form == "jacobian" else {"matrix": jnp.asarray(G)}
    solve = damped_spectral_solve(jnp.asarray(g), inv_sqrt_scale=inv_sqrt, **given)
    b = np.random.default_rng(1).standard_normal(len(g))
    for mu in (1e-2, 0.7, 30.0):
        want = np.linalg.solve(G + mu * np.diag(D), g)
        x, length = solve.step(mu)
        np.testing.assert_allclose(x, want, rtol=RTOL)
        np.testing.assert_allclose(length, np.linalg.norm(np.sqrt(D) * want), rtol=RTOL)
        np.testing.assert_allclose(solve.step_length(mu), length, rtol=1e-15)
        xb, _ = solve.solve(jnp.asarray(b), mu)
        np.testing.assert_allclose(xb, np.linalg.solve(G + mu * np.diag(D), b), rtol=RTOL)
        assert not bool(solve.drops_directions(mu))


@pytest.mark.parametrize("form", ["jacobian", "matrix"])
def test_undamped_rank_deficient_solve_is_minimum_norm(form):
    J, _, _ = problem(8, 5, seed=3, rank=3)
    y = np.random.default_rng(4).standard_normal(8)
    g = J.T @ y
    given = {"jacobian": jnp.asarray(J)} if form == "jacobian" else {"matrix": jnp.asarray(J.T @ J)}
    solve = damped_spectral_solve(jnp.asarray(g), **given)
    x, _ = solve.step(0.0)
    np.testing.assert_allclose(x, np.linalg.lstsq(J, y, rcond=None)[0], rtol=1e-9)
    assert bool(solve.drops_directions(0.0)) and not bool(solve.drops_directions(1e-3))


def test_step_length_decreases_and_works_under_jit_and_vmap():
    J, g, d = problem(10, 4, seed=5)
    solve = jax.jit(
        lambda J, g: damped_spectral_solve(g, jacobian=J, inv_sqrt_scale=jnp.asarray(d) ** -0.5)
    )(jnp.asarray(J), jnp.asarray(g))
    lengths = jax.vmap(solve.step_length)(jnp.geomspace(1e-3, 1e3, 7))
    assert np.all(np.diff(np.asarray(lengths)) < 0)


def test_exactly_one_form():
    with pytest.raises(ValueError, match="exactly one of jacobian and matrix"):
        damped_spectral_solve(jnp.ones(2))
