"""The work pool that runs ``jax.vmap`` of a solve: results equal single solves."""

import jax
import jax.numpy as jnp
import numpy as np

import newtonjax as nj
from newtonjax._solve._pool import default_lanes


def _residual(x, t, y):
    return x[0] * jnp.exp(-x[1] * t) - y


def _problems(num, seed=0):
    rng = np.random.default_rng(seed)
    t = jnp.linspace(0.0, 3.0, 8)
    truth = rng.uniform([0.5, 0.2], [2.0, 1.5], size=(num, 2))
    ys = truth[:, :1] * np.exp(-truth[:, 1:] * np.asarray(t)) + 0.01 * rng.standard_normal((num, 8))
    x0s = truth * rng.uniform(0.5, 1.5, size=(num, 2))
    return t, jnp.asarray(x0s), jnp.asarray(ys)


def _assert_matches_single(batched, single, i):
    # Batched and single solves may round differently in the last bits; the iteration
    # counts and stopping reasons agree exactly.
    np.testing.assert_allclose(batched.params[i], single.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(batched.value[i], single.value, rtol=1e-9, atol=1e-15)
    for field in ("num_steps", "status", "success", "num_fun", "subproblem_status"):
        assert int(getattr(batched, field)[i]) == int(getattr(single, field)), (field, i)


class TestPool:
    def test_nonfinite_in_the_middle_of_a_solve(self):
        # f is finite at the start and NaN past x = 1.5: the solves that step there
        # report NONFINITE with their last finite point; the others converge.
        def f(x, a):
            bad = jnp.where(x[0] > 1.5, jnp.nan, 0.0)
            return jnp.sum((x - a) ** 2) + 0.1 * jnp.sum(x**4) + bad

        a = jnp.array([[0.3, 0.1], [3.0, 0.0], [-1.0, 0.5], [4.0, 1.0], [0.0, 0.0]])
        x0s = jnp.zeros((5, 2)).at[4].set(jnp.array([1.0, 1.0]))
        solve = lambda x0, a, **kw: nj.minimize(f, x0, args=(a,), method="newton", **kw)  # noqa: E731
        batched = jax.jit(jax.vmap(lambda x0, a: solve(x0, a, batch_lanes=2)))(x0s, a)
        single = jax.jit(solve)
        for i in range(5):
            _assert_matches_single(batched, single(x0s[i], a[i]), i)
        assert np.all(np.isfinite(np.asarray(batched.params)))

    def test_every_problem_done_at_its_start(self):
        # Starts at the exact minimizers of a quadratic: zero gradient, zero steps.
        def f(x, c):
            return jnp.sum((x - c) ** 2)

        cs = jnp.arange(10.0).reshape(5, 2)
        res = jax.jit(jax.vmap(lambda c: nj.minimize(f, c, args=(c,), batch_lanes=2)))(cs)
        np.testing.assert_array_equal(res.num_steps, 0)
        np.testing.assert_array_equal(res.status, int(nj.Status.GTOL))
        np.testing.assert_array_equal(res.params, cs)

    def test_default_lanes(self):
        # About 2·√N on the CPU (a multiple of 8, from 8 to 128), 4·√N (at least
        # 128) elsewhere, never more than N.
        assert [default_lanes(n, "cpu") for n in (5, 30, 100, 1000, 10_000, 10**6)] == [
            5, 8, 16, 64, 128, 128,
        ]  # fmt: skip
        assert default_lanes(100, "gpu") == 100
        assert default_lanes(10_000, "gpu") == 384

    def test_default_lanes_match_single_solves(self):
        # More problems than the default lanes (a count that no lane width divides),
        # and problem 2's data holds a NaN: its solve fails at the start with
        # NONFINITE, and neither its lane's next problems nor its neighbours see it.
        num = 131
        assert default_lanes(num) < num
        t, x0s, ys = _problems(num, seed=num)
        ys = ys.at[2, 3].set(jnp.nan)
        solve = lambda x0, y: nj.least_squares(_residual, x0, args=(t, y))  # noqa: E731
        batched = jax.jit(jax.vmap(solve))(x0s, ys)
        single = jax.jit(solve)
        for i in [2, *range(0, num, 7)]:
            _assert_matches_single(batched, single(x0s[i], ys[i]), i)
        assert int(batched.status[2]) == nj.Status.NONFINITE
        assert np.all(np.asarray(batched.success)[np.arange(num) != 2])

    def test_update_rule_traced_once_for_a_batch(self):
        # The unbatched solve (recorded by custom_vmap) and the pool share one trace
        # of the start, the iteration and the result.
        calls = []

        def residual(x, t, y):
            calls.append(None)
            return _residual(x, t, y)

        t, x0s, ys = _problems(300)
        jax.make_jaxpr(jax.vmap(lambda x0, y: nj.least_squares(residual, x0, args=(t, y))))(x0s, ys)
        traced_batched = len(calls)
        calls.clear()
        jax.make_jaxpr(lambda x0, y: nj.least_squares(residual, x0, args=(t, y)))(x0s[0], ys[0])
        assert traced_batched == len(calls)
