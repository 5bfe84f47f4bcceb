"""Batched fits and a data-parallel solve across devices and hosts.

Purpose: show that newtonjax code needs no change to run on several devices or
several processes: the same ``jax.jit`` program runs on one CPU, on ``N`` devices
of one host, or on the devices of every host after ``jax.distributed.initialize()``.

1. A batch of ``--fits`` exponential fits ``y = a·exp(−b t)`` (``nj.least_squares``,
   vmapped) split over all devices with ``mesh=``: each process builds only its own
   problems (``jax.make_array_from_process_local_data``), each device runs its own
   work pool on its shard with no communication, and each process reads its own
   results (``addressable_shards``). Checked against the true parameters.
2. Logistic regression on ``--rows`` rows split over all devices, parameters
   replicated (``nj.minimize(method="newton_cg")``): XLA sums the gradient and each
   Hessian-vector product over the devices with one all-reduce. Checked against
   the stationarity of the solution (‖∇f‖∞).

Expected: every fit recovers its parameters to the noise level, every process
prints the same logistic-regression solution, and the compiled batched solve
holds no collective (printed).

Commands (seconds on a laptop CPU):

* one process, one device::

      python experiments/multihost/sharded_fits.py

* one process, 4 emulated CPU devices::

      XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
          python experiments/multihost/sharded_fits.py

* two processes on this machine (2 devices each; run both lines, e.g. in two
  shells)::

      XLA_FLAGS=--xla_force_host_platform_device_count=2 python \\
          experiments/multihost/sharded_fits.py --coordinator localhost:12355 \\
          --num-processes 2 --process-id 0
      XLA_FLAGS=--xla_force_host_platform_device_count=2 python \\
          experiments/multihost/sharded_fits.py --coordinator localhost:12355 \\
          --num-processes 2 --process-id 1

* on a cluster whose launcher JAX detects (SLURM, Open MPI, Cloud TPU, …), one
  process per host: ``python experiments/multihost/sharded_fits.py --distributed``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import newtonjax as nj


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fits", type=int, default=64, help="number of batched fits")
    parser.add_argument("--rows", type=int, default=4096, help="rows of the regression")
    parser.add_argument("--coordinator", help="host:port of process 0 (multi-process)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument(
        "--distributed", action="store_true", help="jax.distributed.initialize() auto-detected"
    )
    return parser.parse_args(argv)


def start(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` when asked; nothing for one process."""
    if args.coordinator:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif args.distributed:
        jax.distributed.initialize()


def local_rows(total: int, sharding: NamedSharding) -> slice:
    """The rows of a ``(total, ...)`` array that this process's devices hold."""
    index = sharding.addressable_devices_indices_map((total,))
    starts = sorted(i[0].start or 0 for i in index.values())
    stops = sorted(i[0].stop if i[0].stop is not None else total for i in index.values())
    return slice(starts[0], stops[-1])


def batched_fits(mesh, num_fits: int) -> None:
    rows = NamedSharding(mesh, P("data"))
    t = jnp.linspace(0.0, 2.0, 20)

    def residual(p, y):
        return p[0] * jnp.exp(-p[1] * t) - y

    # Every process draws the same global problems from one seed and keeps its rows
    # (in a real run each process would read only its own files).
    rng = np.random.default_rng(0)
    truth = np.stack([rng.uniform(0.5, 2.0, num_fits), rng.uniform(0.3, 1.5, num_fits)], 1)
    ys = truth[:, :1] * np.exp(-truth[:, 1:] * np.asarray(t))
    ys = ys + 1e-3 * rng.standard_normal(ys.shape)
    mine = local_rows(num_fits, rows)
    x0 = jax.make_array_from_process_local_data(rows, np.ones((mine.stop - mine.start, 2)))
    y = jax.make_array_from_process_local_data(rows, ys[mine])

    solve = jax.jit(jax.vmap(lambda x0, y: nj.least_squares(residual, x0, args=(y,), mesh=mesh)))
    hlo = solve.lower(x0, y).compile().as_text()
    collectives = sum(hlo.count(f"{c}(") for c in ("all-gather", "all-reduce", "all-to-all"))
    result = solve(x0, y)
    # Each process reads the results its own devices hold.
    errors, solved, count = [], 0, 0
    for params, ok in zip(
        result.params.addressable_shards, result.success.addressable_shards, strict=True
    ):
        rows_of = params.index[0]
        got = np.asarray(params.data)
        errors.append(np.max(np.abs(got - truth[rows_of]) / truth[rows_of]))
        solved += int(np.sum(np.asarray(ok.data)))
        count += got.shape[0]
    print(
        f"[process {jax.process_index()}] batched fits: {count} of {num_fits} on my "
        f"{len(result.params.addressable_shards)} device(s), {solved} solved, "
        f"max relative error vs truth {max(errors):.1e}, output {result.params.sharding.spec}, "
        f"collectives in the compiled solve: {collectives}"
    )


def data_parallel(mesh, num_rows: int) -> None:
    rows = NamedSharding(mesh, P("data"))
    d = 8
    rng = np.random.default_rng(1)
    X = rng.standard_normal((num_rows, d))
    w_true = rng.standard_normal(d)
    y = (rng.uniform(size=num_rows) < 1 / (1 + np.exp(-X @ w_true))).astype(np.float64)
    mine = local_rows(num_rows, rows)
    Xg = jax.make_array_from_process_local_data(rows, X[mine])
    yg = jax.make_array_from_process_local_data(rows, y[mine])

    def f(w, X, y):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - y * z) + 1e-3 * jnp.sum(w**2)

    solve = jax.jit(lambda X, y: nj.minimize(f, jnp.zeros(d), args=(X, y), method="newton_cg"))
    result = solve(Xg, yg)
    grad = jax.jit(jax.grad(f))(result.params, Xg, yg)
    w = np.asarray(jax.device_get(result.params))  # replicated: every process has it
    print(
        f"[process {jax.process_index()}] data parallel: {int(result.num_steps)} Newton-CG "
        f"steps, success {bool(result.success)}, ‖∇f‖∞ {float(jnp.max(jnp.abs(grad))):.1e}, "
        f"w[:3] = {np.round(w[:3], 6)}"
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    start(args)
    # Auto axes: XLA decides how the data-parallel products are reduced. (With
    # jax.make_mesh's default Explicit axes the batched solve works as it is, but
    # ``X @ w`` over sharded rows needs an ``out_sharding``.)
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    if jax.process_index() == 0:
        print(
            f"{jax.process_count()} process(es), {jax.device_count()} device(s) in all, "
            f"{jax.local_device_count()} here"
        )
    # The batch and the rows must divide over the devices.
    fits = -(-args.fits // jax.device_count()) * jax.device_count()
    num_rows = -(-args.rows // jax.device_count()) * jax.device_count()
    batched_fits(mesh, fits)
    data_parallel(mesh, num_rows)


if __name__ == "__main__":
    main()
