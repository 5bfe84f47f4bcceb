"""Argument checks: one rule per kind of argument, Python numbers only, clear messages."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import newtonjax as nj
from newtonjax._checks import (
    check_count,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_static_int,
)


@pytest.mark.parametrize("bad", [True, False, 2.0, np.float64(3.0)])
def test_counts_reject_bools_and_floats(bad):
    with pytest.raises(TypeError, match="f: k must be an integer"):
        check_count("f", "k", bad)


def test_counts_bound_python_integers_only():
    with pytest.raises(ValueError, match="^f: k must be >= 1, got 0$"):
        check_count("f", "k", 0)
    with pytest.raises(ValueError, match="f: k must be >= 1, got -3"):
        check_count("f", "k", np.int32(-3))
    for ok in (None, 1, np.int64(5), jnp.asarray(0)):  # an array may be traced: unchecked
        check_count("f", "k", ok)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_positive_means_finite_and_greater_than_zero(bad):
    with pytest.raises(ValueError, match=r"f: x must be finite and > 0, got"):
        check_positive("f", "x", bad)


def test_positive_variants():
    check_nonnegative("f", "x", 0.0)
    with pytest.raises(ValueError, match=r"f: x must be finite and >= 0, got inf"):
        check_nonnegative("f", "x", float("inf"))
    check_positive("f", "x", float("inf"), allow_inf=True)
    with pytest.raises(ValueError, match=r"f: x must be > 0, got nan"):
        check_positive("f", "x", float("nan"), allow_inf=True)
    for ok in (None, jnp.asarray(-1.0)):  # arrays may be traced: unchecked
        check_positive("f", "x", ok)


def test_range_and_static_int():
    check_in_range("f", "eta", 0.0, 0.0, 1.0)
    for bad in (1.0, 1, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"f: eta must be in \[0.0, 1.0\), got"):
            check_in_range("f", "eta", bad, 0.0, 1.0)
    with pytest.raises(TypeError, match="f: m must be a Python int"):
        check_static_int("f", "m", jnp.asarray(2))
    with pytest.raises(TypeError, match="f: m must be a Python int"):
        check_static_int("f", "m", True)
    with pytest.raises(ValueError, match=r"f: m must be in \[1, n\] with n = 3, got 4"):
        check_static_int("f", "m", 4, maximum=3, maximum_name="n")


@pytest.mark.parametrize(
    "factory",
    [nj.scale_by_newton, nj.scale_by_trust_region, nj.scale_by_gauss_newton,
     nj.scale_by_levenberg_marquardt, nj.scale_by_hessian_free],
    ids=lambda f: f.__name__,
)  # fmt: skip
def test_every_rule_checks_max_cg_steps_the_same_way(factory):
    name = factory.__name__
    with pytest.raises(ValueError, match=f"^{name}: max_cg_steps must be >= 1, got 0$"):
        factory(max_cg_steps=0)
    for bad in (True, 10.0):
        with pytest.raises(TypeError, match=f"{name}: max_cg_steps must be an integer"):
            factory(max_cg_steps=bad)
    with pytest.raises(ValueError, match=f"{name}: cg_rtol must be finite and > 0"):
        factory(cg_rtol=float("inf"))


def test_traced_hyperparameters_pass_the_checks():
    # inject_hyperparams hands numeric arguments over as arrays.
    tx = optax.inject_hyperparams(nj.scale_by_trust_region)(max_radius=10.0, eta=0.1)
    loss = lambda w: jnp.sum((w - 1.0) ** 2)  # noqa: E731
    w = jnp.zeros(2)
    u, _ = jax.jit(lambda w, s: tx.update(jax.grad(loss)(w), s, w, value_fn=loss))(w, tx.init(w))
    np.testing.assert_allclose(u, -jnp.ones(2), rtol=1e-12)
