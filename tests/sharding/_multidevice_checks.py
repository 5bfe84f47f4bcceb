"""Measurements on 4 emulated CPU devices, printed as one JSON object.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so this
runs in its own process (``tests/sharding/test_sharding.py`` starts it and asserts
on what it prints; ``python tests/sharding/_multidevice_checks.py`` shows it).

What it measures:

* batched solves (``jax.jit(jax.vmap(least_squares))``) over batch-sharded inputs,
  with the mesh given as an argument and as the ambient mesh (``jax.set_mesh``), and
  a batch that does not divide over the devices: the output sharding, the
  collectives in the compiled program, the largest relative difference from the
  same batch on one device and from scipy's MINPACK fits;
* data-parallel curvature (rows of the data sharded, parameters replicated):
  all-reduces of the compiled ``hvp``, ``ggn_vp``, one ``hessian_free`` step and a
  ``newton_cg`` solve (in total and per loop body), and their difference from the
  one-device results and from dense references (``jax.hessian``, ``XᵀDX``);
* parameters sharded over a "model" axis (a 2×2 mesh): ``hvp`` and one
  ``hessian_free`` step, their output sharding and their difference from one device;
* the experiment runner with ``mesh: {data: 4}`` on a batch of curve fits: its
  final loss against the same run on one device, and the error for a batch that
  does not divide over the devices.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ["JAX_ENABLE_X64"] = "1"

import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import newtonjax as nj  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")


def collectives(hlo: str) -> dict[str, int]:
    """Collective instructions in compiled HLO text (async pairs counted once)."""
    return {k: len(re.findall(rf"\b{k}(?:-start)?\(", hlo)) for k in COLLECTIVES}


def computations(hlo: str) -> dict[str, str]:
    """Computation name -> its instructions, from compiled HLO text."""
    out, name, lines = {}, None, []
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name, lines = head.group(1), []
        elif line.startswith("}") and name is not None:
            out[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    return out


def all_reduces(hlo: str) -> dict:
    """All-reduces in total and in each while loop's body (not counting nested loops)."""
    bodies = re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo)
    comps = computations(hlo)
    count = lambda text: len(re.findall(r"\ball-reduce(?:-start)?\(", text))  # noqa: E731
    return {"total": count(hlo), "loop_bodies": [count(comps[b]) for b in bodies]}


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def spec(x) -> list:
    return [list(s) if isinstance(s, tuple) else s for s in x.sharding.spec]


def batched_solves(out: dict) -> None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n, m = 16, 12
    t = jnp.linspace(0.0, 1.0, m)
    amp = 1.0 + jax.random.uniform(jax.random.PRNGKey(0), (n,))
    rate = 0.5 + jax.random.uniform(jax.random.PRNGKey(1), (n,))
    noise = 1e-2 * jax.random.normal(jax.random.PRNGKey(4), (n, m))
    ys = amp[:, None] * jnp.exp(-rate[:, None] * t) + noise
    x0s = jnp.ones((n, 2))

    def residual(p, y):
        return p[0] * jnp.exp(-p[1] * t) - y

    # Independent reference: scipy's MINPACK fit of each problem.
    t_np = np.asarray(t)
    exact = np.stack(
        [
            scipy.optimize.least_squares(
                lambda p, y=y: p[0] * np.exp(-p[1] * t_np) - y,
                np.ones(2),
                method="lm",
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
            ).x
            for y in np.asarray(ys)
        ]
    )

    def solver(in_axes=0, **kw):
        # batch_lanes=2 < problems per device: every device runs the refilling pool.
        # (Gauss–Newton compiles in half the time of the default Levenberg–Marquardt.)
        def one(x0, y):
            return nj.least_squares(
                residual, x0, args=(y,), method="gauss_newton", batch_lanes=2, **kw
            )

        return jax.jit(jax.vmap(one, in_axes=(in_axes, 0)))

    one = jax.devices()[0]
    ref = solver()(jax.device_put(x0s, one), jax.device_put(ys, one))
    out["one_device_vs_scipy"] = rel_diff(ref.params, exact)

    rows = NamedSharding(mesh, P("data"))
    x0_s, y_s = jax.device_put(x0s, rows), jax.device_put(ys, rows)
    # The ambient case shares one start (x0 not batched, replicated on every device).
    cases = {
        "explicit": (solver(mesh=mesh), False, x0_s),
        "ambient": (solver(in_axes=None), True, jax.device_put(x0s[0], NamedSharding(mesh, P()))),
    }
    for name, (fn, ambient, start) in cases.items():
        if ambient:
            with jax.set_mesh(mesh):
                compiled = fn.lower(start, y_s).compile()
        else:
            compiled = fn.lower(start, y_s).compile()
        hlo, res = compiled.as_text(), compiled(start, y_s)
        out[f"batched_{name}"] = {
            "input_spec": spec(y_s),
            "output_specs": sorted({str(spec(leaf)) for leaf in jax.tree.leaves(res)}),
            "collectives": collectives(hlo),
            "vs_one_device": rel_diff(res.params, ref.params),
            "vs_scipy": rel_diff(res.params, exact),
            "same_steps": bool(np.array_equal(res.num_steps, ref.num_steps)),
            "all_success": bool(np.all(res.success)),
        }

    # 10 problems on 4 devices: padded to 12, two results dropped.
    k = 10
    fn = solver(mesh=mesh)
    res = fn(x0s[:k], ys[:k])
    out["batched_uneven"] = {
        "shape": list(res.params.shape),
        "vs_one_device": rel_diff(res.params, ref.params[:k]),
        "vs_scipy": rel_diff(res.params, exact[:k]),
        "all_success": bool(np.all(res.success)),
        "same_steps": bool(np.array_equal(res.num_steps, ref.num_steps[:k])),
    }


def data_parallel(out: dict) -> None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n, d = 64, 4
    X = jax.random.normal(jax.random.PRNGKey(2), (n, d))
    w_true = jnp.array([1.0, -2.0, 0.5, 0.3])
    y = (jax.random.uniform(jax.random.PRNGKey(3), (n,)) < jax.nn.sigmoid(X @ w_true)) * 1.0
    w = jnp.array([0.1, -0.2, 0.3, 0.0])
    v = jnp.array([1.0, 0.5, -1.0, 2.0])

    def loss(z, y):
        return jnp.mean(jax.nn.softplus(z) - y * z)

    def f(w, X, y):  # regularized logistic regression
        return loss(X @ w, y) + 0.05 * jnp.sum(w**2)

    def hf_step(w, X, y):
        obj = nj.composite_objective(lambda p: X @ p, lambda z: loss(z, y))
        tx = nj.hessian_free(max_cg_steps=10)
        value, grad = jax.value_and_grad(obj)(w)
        u, _ = tx.update(grad, tx.init(w), w, value_fn=obj, value=value, grad=grad)
        return optax.apply_updates(w, u)

    programs = {
        "hvp": lambda w, v, X, y: nj.hvp(f, w, v, X, y),
        "ggn_vp": lambda w, v, X, y: nj.ggn_vp(lambda p: X @ p, lambda z: loss(z, y), w, v),
        "hessian_free_step": lambda w, v, X, y: hf_step(w, X, y),
        "newton_cg": lambda w, v, X, y: nj.minimize(f, w, args=(X, y), method="newton_cg").params,
    }
    # Independent references: dense Hessian and GGN XᵀDX/n, and the exact optimality
    # condition ∇f = 0 for the solve.
    s = jax.nn.sigmoid(X @ w)
    dense = {
        "hvp": jax.hessian(f)(w, X, y) @ v,
        "ggn_vp": X.T @ (s * (1 - s) * (X @ v)) / n,
    }
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    single = {}
    sharded = [jax.device_put(a, sh) for a, sh in ((w, rep), (v, rep), (X, rows), (y, rows))]
    for name, prog in programs.items():
        compiled = jax.jit(prog).lower(*sharded).compile()
        hlo, res = compiled.as_text(), compiled(*sharded)
        single[name] = jax.jit(prog)(w, v, X, y)
        entry = {
            "all_reduce": all_reduces(hlo),
            "collectives": collectives(hlo),
            "vs_one_device": rel_diff(res, single[name]),
            "output_spec": spec(res),
        }
        if name in dense:
            entry["vs_dense"] = rel_diff(res, dense[name])
        if name == "newton_cg":
            entry["grad_at_solution"] = float(jnp.max(jnp.abs(jax.grad(f)(res, X, y))))
        out[f"dp_{name}"] = entry

    # Parameters sharded over a "model" axis, data over "data" (2×2 mesh).
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    par = NamedSharding(mesh2, P("model"))
    args2 = [
        jax.device_put(w, par),
        jax.device_put(v, par),
        jax.device_put(X, NamedSharding(mesh2, P("data", "model"))),
        jax.device_put(y, NamedSharding(mesh2, P("data"))),
    ]
    for name in ("hvp", "hessian_free_step"):
        compiled = jax.jit(programs[name]).lower(*args2).compile()
        hlo, res = compiled.as_text(), compiled(*args2)
        entry = {
            "all_reduce": all_reduces(hlo),
            "output_spec": spec(res),
            "vs_one_device": rel_diff(res, single[name]),
        }
        if name in dense:
            entry["vs_dense"] = rel_diff(res, dense[name])
        out[f"model_sharded_{name}"] = entry


def runner(out: dict) -> None:
    import tempfile

    from newtonjax.experiments.config import ConfigError, parse_config
    from newtonjax.experiments.runner import run_experiment, setup_platform

    raw = {
        "name": "sharded_curve_fits",
        "x64": True,
        "problem": {"name": "curve_fits", "params": {"num_fits": 8, "num_points": 10}},
        "optimizers": [{"name": "gauss_newton"}],
        "run": {"steps": 3, "progress": False, "compilation_cache": False},
        "output": {"plots": False},
    }
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mesh in (("one_device", {}), ("mesh", {"data": 4})):
            config = parse_config({**raw, "mesh": mesh})
            run_dir = run_experiment(config, device=setup_platform(config), output_dir=tmp)
            summary = json.loads((run_dir / "summary.json").read_text())
            losses[name] = summary["optimizers"][0]["final_loss"]
        try:
            config = parse_config({**raw, "mesh": {"data": 3}})
            run_experiment(config, device=setup_platform(config), output_dir=tmp)
            uneven = "no error"
        except ConfigError as err:
            uneven = str(err)
    out["runner"] = {
        "vs_one_device": rel_diff(losses["mesh"], losses["one_device"]),
        "uneven_error": uneven,
    }


def implicit_gradient(out: dict) -> None:
    """``jax.grad`` through a sharded batched solve (implicit rule) against one device
    and against central finite differences of the solution."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    t = jnp.linspace(0.0, 1.0, 12)
    n = 8
    ys = (1.0 + 0.1 * jnp.arange(n))[:, None] * jnp.exp(-0.7 * t) + 0.01 * jnp.sin(7 * t)
    x0s = jnp.ones((n, 2))

    def residual(p, y):
        return p[0] * jnp.exp(-p[1] * t) - y

    def total(ys, **kw):
        fit = jax.vmap(lambda x0, y: nj.least_squares(residual, x0, args=(y,), **kw).params)
        return jnp.sum(fit(x0s, ys) ** 2)

    rows = NamedSharding(mesh, P("data"))
    grad = jax.jit(jax.grad(lambda y: total(y, mesh=mesh, batch_lanes=2)))(jax.device_put(ys, rows))
    one = jax.jit(jax.grad(total))(ys)
    h, i, j = 1e-3, 3, 5  # the solves stop near 1e-9: a larger step, O(h²) error
    e = jnp.zeros_like(ys).at[i, j].set(h)
    fd = (total(ys + e) - total(ys - e)) / (2 * h)
    out["implicit_gradient"] = {
        "output_spec": spec(grad),
        # Relative to the largest entry: some entries of the gradient are near 0.
        "vs_one_device": float(jnp.max(jnp.abs(grad - one)) / jnp.max(jnp.abs(one))),
        "vs_finite_difference": abs(float(grad[i, j] - fd)) / abs(float(fd)),
    }


def main() -> None:
    import sys

    out = {"devices": jax.device_count(), "x64": bool(jax.config.jax_enable_x64)}
    sections = [batched_solves, data_parallel, runner]
    if "--slow" in sys.argv:
        sections = [implicit_gradient]
    for section in sections:
        start = time.process_time()
        section(out)
        out.setdefault("cpu_seconds", {})[section.__name__] = time.process_time() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
