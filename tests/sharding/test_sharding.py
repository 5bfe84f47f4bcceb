"""Batched solves and curvature across devices (4 emulated CPU devices).

The device count is fixed when JAX starts, so the measurements run in one
subprocess (``_multidevice_checks.py``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and x64) and the tests here
assert on what it reports. References: the same programs on one device, scipy's
MINPACK fits, a dense ``jax.hessian`` and the closed-form GGN ``XᵀDX/n``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import newtonjax as nj
from newtonjax._solve._sharded import BatchSharding, make_batch_sharding

SCRIPT = pathlib.Path(__file__).with_name("_multidevice_checks.py")

ROUNDING = 1e-12  # relative: a differently compiled program, float64
NONE = {"all-gather": 0, "all-reduce": 0, "collective-permute": 0, "all-to-all": 0,
        "reduce-scatter": 0}  # fmt: skip


def _run_checks(*flags: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["x64"]
    return out


@pytest.fixture(scope="module")
def measured() -> dict:
    return _run_checks()


@pytest.mark.slow
def test_implicit_gradient_through_sharded_batch():
    m = _run_checks("--slow")["implicit_gradient"]
    assert m["output_spec"] == ["data"]
    # The implicit rule's dense solve (eigh) on the Hessian of each fit amplifies the
    # rounding of a differently compiled solve by the Hessian's condition number.
    assert m["vs_one_device"] <= 1e-8, m
    assert m["vs_finite_difference"] <= 1e-4


@pytest.mark.parametrize("case", ["batched_explicit", "batched_ambient"])
def test_batched_solve_stays_sharded_without_collectives(measured, case):
    m = measured[case]
    assert m["input_spec"] == ["data"]
    assert m["output_specs"] == [str(["data"])]  # every leaf of the result
    assert m["collectives"] == NONE
    assert m["vs_one_device"] <= ROUNDING
    assert m["same_steps"] and m["all_success"]
    assert m["vs_scipy"] <= 1e-6


def test_uneven_batch_is_padded_and_matches_one_device(measured):
    m = measured["batched_uneven"]
    assert m["shape"] == [10, 2]
    assert m["vs_one_device"] <= ROUNDING and m["vs_scipy"] <= 1e-6
    assert m["same_steps"] and m["all_success"]


@pytest.mark.parametrize("name", ["hvp", "ggn_vp"])
def test_data_parallel_product_costs_one_all_reduce(measured, name):
    m = measured[f"dp_{name}"]
    assert m["all_reduce"] == {"total": 1, "loop_bodies": []}
    assert {k: v for k, v in m["collectives"].items() if k != "all-reduce"} == {
        k: 0 for k in NONE if k != "all-reduce"
    }
    assert m["output_spec"] == []  # replicated, like the parameters
    assert m["vs_dense"] <= 1e-13 and m["vs_one_device"] <= ROUNDING


def test_data_parallel_cg_loops_one_all_reduce_per_product(measured):
    hf = measured["dp_hessian_free_step"]
    # The CG loop's body: one GGN product, one all-reduce; outside it the value
    # and gradient at the start and the value at the trial point.
    assert hf["all_reduce"]["loop_bodies"] == [1]
    assert hf["collectives"]["all-gather"] == 0
    assert hf["vs_one_device"] <= 1e-12
    ncg = measured["dp_newton_cg"]
    # Newton iteration, CG (one Hessian product) and line search: one each.
    assert ncg["all_reduce"]["loop_bodies"] == [1, 1, 1]
    assert ncg["collectives"]["all-gather"] == 0
    assert ncg["vs_one_device"] <= 1e-12
    assert ncg["grad_at_solution"] <= 1e-12


@pytest.mark.parametrize("name", ["hvp", "hessian_free_step"])
def test_model_sharded_parameters(measured, name):
    m = measured[f"model_sharded_{name}"]
    assert m["output_spec"] == ["model"]
    assert m["vs_one_device"] <= 1e-12
    if "vs_dense" in m:
        assert m["vs_dense"] <= 1e-13


def test_runner_mesh_matches_one_device(measured):
    m = measured["runner"]
    assert m["vs_one_device"] <= ROUNDING
    assert m["uneven_error"].startswith("mesh.data: 3 devices do not divide the batch of 8")


# ------------------------------------------------------------ in this process


def _mesh(shape, names):
    return Mesh(np.array(jax.devices()[:1]).reshape(shape), names)


def test_mesh_argument_errors_name_function_and_argument():
    mesh = _mesh((1,), ("data",))
    residual = lambda p: p - 1.0  # noqa: E731
    with pytest.raises(TypeError, match="least_squares: mesh must be a jax.sharding.Mesh"):
        nj.least_squares(residual, jnp.zeros(2), mesh="data")
    with pytest.raises(ValueError, match="minimize: batch_axis 'model' is not an axis"):
        nj.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), mesh=mesh, batch_axis="model")
    with pytest.raises(TypeError, match="minimize: batch_axis must be a mesh axis name"):
        nj.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), mesh=mesh, batch_axis=3)


def test_batch_sharding_is_part_of_the_cache_key():
    a = make_batch_sharding("minimize", _mesh((1,), ("data",)), "data")
    b = make_batch_sharding("minimize", _mesh((1,), ("data",)), "data")
    c = make_batch_sharding("minimize", _mesh((1,), ("batch",)), None)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert BatchSharding("minimize") != a


def test_placement_without_a_mesh_is_one_pool():
    assert BatchSharding("minimize").placement() is None
    assert make_batch_sharding("minimize", None, ()).placement() is None
    mesh = _mesh((1,), ("data",))
    assert make_batch_sharding("minimize", mesh, None).placement() == (mesh, ("data",), 1)
    with jax.set_mesh(mesh):
        assert BatchSharding("minimize").placement() == (None, ("data",), 1)


def test_one_device_explicit_mesh_matches_no_mesh():
    # jax.make_mesh gives AxisType.Explicit axes: the arrays' types carry the sharding.
    mesh = jax.make_mesh((1,), ("data",))
    t = jnp.linspace(0.0, 1.0, 8)
    ys = jnp.stack([2.0 * jnp.exp(-0.5 * t), 1.5 * jnp.exp(-1.2 * t)])
    x0s = jnp.ones((2, 2))

    def fit(**kw):
        return jax.vmap(
            lambda x0, y: nj.least_squares(
                lambda p, y: p[0] * jnp.exp(-p[1] * t) - y, x0, args=(y,),
                method="gauss_newton", **kw,
            ).params
        )  # fmt: skip

    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    got = jax.jit(fit(mesh=mesh))(jax.device_put(x0s, sharding), jax.device_put(ys, sharding))
    assert got.sharding.spec[0] == "data"
    np.testing.assert_allclose(np.asarray(got), [[2.0, 0.5], [1.5, 1.2]], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fit())(x0s, ys)), rtol=1e-14)


def test_runner_mesh_errors():
    from newtonjax.experiments.config import ConfigError, parse_config
    from newtonjax.experiments.runner import make_mesh

    raw = {"name": "m", "problem": {"name": "quadratic"}, "optimizers": [{"name": "newton"}]}
    with pytest.raises(ConfigError, match="mesh: unknown axis 'model'; valid axes: data"):
        parse_config({**raw, "mesh": {"model": 2}})
    with pytest.raises(ConfigError, match=r"mesh.data: expected a number of devices >= 1"):
        parse_config({**raw, "mesh": {"data": 0}})
    config = parse_config({**raw, "mesh": {"data": jax.device_count() + 1}})
    with pytest.raises(ConfigError, match="needs .* devices, but .* cpu device"):
        make_mesh(config, jax.devices()[0])
    assert make_mesh(parse_config(raw), jax.devices()[0]) is None
    one = make_mesh(parse_config({**raw, "mesh": {"data": 1}}), jax.devices()[0])
    assert dict(one.shape) == {"data": 1}
