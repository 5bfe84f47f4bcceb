"""The work pool: a batch of solves under ``vmap``, refilled as problems finish.

A vmapped ``while_loop`` runs every lane until the slowest problem is done; here a
free lane takes the next waiting problem, so a batch costs about the sum of the
problems' own iteration counts (see :func:`_solve_pooled`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from newtonjax._solve._loop import Solver, solve_one
from newtonjax._solve._result import RUNNING, SolveResult
from newtonjax._tree import PyTree

__all__ = ["default_lanes", "with_pooled_batching"]


def _lane_where(mask, new, old):
    """Per-lane select: ``mask`` has shape (B,), leaves have a leading axis B."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)


def _take(tree, index):
    return jax.tree.map(lambda a: a[index], tree)


def default_lanes(num_problems: int, platform: str | None = None) -> int:
    """Lanes of the work pool for a batch of ``num_problems`` solves.

    Each trip of the pool runs one iteration on every lane, busy or not, and the
    drain at the end (the queue is empty, the slowest problems still run) costs
    lanes × their remaining iterations; narrow pools pay the loop's fixed cost per
    trip (on the CPU, mostly the launch of each small kernel) more often, so the
    best width grows with ``N``. On the CPU the pool has about ``2√N`` lanes, a
    multiple of 8 between 8 and 128. Run times of batches of four-parameter fits
    (8 to 14 iterations on average, at most 100) on 2 cores, start spreads 0.3 and
    0.6 (``experiments/benchmarks/batched_curve_fit.py``):

    ======  ===============================================  =======
    N       lanes: ms at spread 0.3 / 0.6                    default
    ======  ===============================================  =======
    100     8: 5 / 11, 16: 6 / 10, 32: 6 / 14, 100: 10 / 37  16
    300     16: 17 / 23, 32: 20 / 23, 64: 30 / 33,           32
            128: 48 / 57
    1,000   32: 45 / 73, 40: 45 / 76, 64: 44 / 80,           64
            128: 50 / 102
    3,000   64: 134 / 213, 96: 125 / 215, 128: 121 / 210     112
    10,000  96: 411 / 626, 128: 375 / 572, 256: 400 / 616    128
    ======  ===============================================  =======

    Accelerators run wide batches at little more than the cost of narrow ones, so
    elsewhere the pool is wider: about ``4√N`` (at least 128), unmeasured here. A
    pool at least as wide as the batch is a plain vmapped loop.

    Args:
      num_problems: the batch size ``N``.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``; ``None``: JAX's default backend.
    """
    if (platform or jax.default_backend()) == "cpu":
        lanes = min(128, max(8, 8 * round(2 * math.sqrt(num_problems) / 8)))
    else:
        lanes = max(128, 64 * round(4 * math.sqrt(num_problems) / 64))
    return min(lanes, num_problems)


def _pack(tree: PyTree, batch: int) -> tuple[tuple[jax.Array, ...], Callable]:
    """The leaves of a batched tree as one ``(batch, k)`` array per dtype.

    The pool moves whole problem states between lanes and results; one gather or
    scatter per dtype instead of one per leaf keeps the compiled loop small.
    Returns the arrays and ``unpack``, which inverts it for any leading size.
    """
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[Any, list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault(jnp.dtype(leaf.dtype), []).append(i)
    packed = tuple(
        jnp.concatenate([leaves[i].reshape(batch, -1) for i in idx], axis=1)
        for idx in groups.values()
    )
    shapes = [leaf.shape[1:] for leaf in leaves]

    def unpack(arrays):
        out: list[Any] = [None] * len(leaves)
        for arr, idx in zip(arrays, groups.values(), strict=True):
            start = 0
            for i in idx:
                size = math.prod(shapes[i])
                out[i] = arr[:, start : start + size].reshape(arr.shape[:1] + shapes[i])
                start += size
        return jax.tree.unflatten(treedef, out)

    return packed, unpack


def _solve_pooled(solver: Solver, x0s, argss, num_problems: int, lanes: int) -> SolveResult:
    """Solve a batch with a pool of ``lanes`` slots, refilled as problems finish.

    A vmapped ``while_loop`` runs every lane until the slowest problem is done, so a
    batch whose median problem needs 7 iterations and whose slowest needs 100 pays
    for 100 per problem. Here a free lane takes the next waiting problem, so the
    work per problem stays close to its own iteration count; the results are
    scattered back to each problem's position. All problems are started at once
    (one batched evaluation of ``f`` and ``∇f``), so a refill only copies a start
    state into the lane. The start states of all ``N`` problems are held until
    their lanes take them: for Levenberg–Marquardt on a least-squares objective
    each includes the residual's ``m × n`` Jacobian at ``x0``.

    Retiring and refilling lanes on every trip (finish, one scatter and one gather
    per dtype) costs little next to an iteration of the update rule: a pool that
    does it only once an eighth or a quarter of its lanes are done (under a
    ``lax.cond``) was no faster, and neither was keeping the lanes' states packed
    between trips. Rounds of vmapped steps over all active problems, compacted into
    a few power-of-two widths, would compile the iteration once per width.
    """
    if lanes >= num_problems:
        return jax.vmap(functools.partial(solve_one, solver))(x0s, argss)
    fresh, unpack_carry = _pack(jax.vmap(solver.init)(x0s, argss), num_problems)
    first = jnp.arange(lanes)
    carry = unpack_carry(tuple(a[:lanes] for a in fresh))
    shapes = jax.eval_shape(jax.vmap(solver.finish), carry)
    empty = jax.tree.map(lambda sd: jnp.zeros((num_problems,) + sd.shape[1:], sd.dtype), shapes)
    results, unpack_results = _pack(empty, num_problems)
    slot = first.astype(jnp.int32)
    next_problem = jnp.asarray(lanes, jnp.int32)

    def cond(state):
        return jnp.any(state[1] >= 0)

    def body(state):
        carry, slot, next_problem, results = state
        args = _take(argss, jnp.maximum(slot, 0))
        stepped = jax.vmap(solver.step)(carry, args)
        carry = _lane_where(carry.status == RUNNING, stepped, carry)
        done = (slot >= 0) & (carry.status != RUNNING)
        finished, _ = _pack(jax.vmap(solver.finish)(carry), lanes)
        target = jnp.where(done, slot, num_problems)  # out of range: dropped
        results = tuple(
            r.at[target].set(f, mode="drop") for r, f in zip(results, finished, strict=True)
        )
        # Free lanes take the next waiting problems, in lane order.
        free = done | (slot < 0)
        problem = next_problem + jnp.cumsum(free, dtype=jnp.int32) - 1
        take = free & (problem < num_problems)
        slot = jnp.where(take, problem, jnp.where(done, -1, slot)).astype(jnp.int32)
        next_problem = next_problem + jnp.sum(take, dtype=jnp.int32)
        source = jnp.clip(problem, 0, num_problems - 1)
        loaded = unpack_carry(tuple(a[source] for a in fresh))
        carry = _lane_where(take, loaded, carry)
        return carry, slot, next_problem, results

    # Problems that are done at their start (already stationary) leave at once.
    _, _, _, results = jax.lax.while_loop(cond, body, (carry, slot, next_problem, results))
    return unpack_results(results)


def with_pooled_batching(solver: Solver, lanes: int | None, batch_sharding=None):
    """``(x0, args) -> SolveResult`` whose ``vmap`` runs the work pool.

    ``batch_sharding`` (a :class:`newtonjax._solve._sharded.BatchSharding`) splits
    the batch over the devices of a mesh, one pool per device on its own shard;
    ``lanes`` is then the width of each device's pool.
    """

    def pooled(x0s, argss, num_problems):
        n_lanes = default_lanes(num_problems) if lanes is None else lanes
        return _solve_pooled(solver, x0s, argss, num_problems, n_lanes)

    @jax.custom_batching.custom_vmap
    def run(x0, args):
        return solve_one(solver, x0, args)

    @run.def_vmap
    def run_batched(axis_size, in_batched, x0, args):
        out = None
        if batch_sharding is not None:
            out = batch_sharding.solve(pooled, x0, args, in_batched, axis_size)
        if out is None:

            def broadcast(tree, batched):
                return jax.tree.map(
                    lambda a, b: a if b else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a)),
                    tree,
                    batched,
                )

            out = pooled(broadcast(x0, in_batched[0]), broadcast(args, in_batched[1]), axis_size)
        return out, jax.tree.map(lambda _: True, out)

    return run
