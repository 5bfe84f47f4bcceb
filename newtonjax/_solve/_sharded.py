"""Batched solves across devices: one work pool per device, on its own shard.

Under ``jax.jit`` a vmapped solve over inputs sharded along the batch axis would
otherwise be partitioned by GSPMD, which cannot split the work pool's gathers and
scatters by problem: it gathers the whole batch onto every device and every device
solves all of it. Here the batch is split with :func:`jax.shard_map` over the
mesh axes that hold it, each device runs the pool (:mod:`._pool`) on its own
problems, and the results come back sharded like the inputs. The problems are
independent, so nothing is communicated inside the loop: the compiled solve holds
no collective when the batch divides evenly over the devices.

Which mesh: the one given to the solve (``minimize(..., mesh=mesh)``), else the
ambient mesh of ``jax.set_mesh``; with neither the batch is solved by one pool as
before. A batch that does not divide evenly over the devices is padded with copies
of its last problem, whose results are dropped. Both kinds of mesh axes work
(``AxisType.Auto`` and ``AxisType.Explicit``, the default of ``jax.make_mesh``).

Emulated CPU devices (``--xla_force_host_platform_device_count``) share one
intra-op thread pool; with as many devices as cores, a batched LAPACK kernel that
splits a wide batch onto that pool (the QR in Levenberg–Marquardt's step, above
about 128 lanes per device) can wait forever in jaxlib 0.10.2. Keep ``batch_lanes``
at 128 or below there; real devices (GPUs, TPUs, hosts) are not affected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, Mesh, PartitionSpec

__all__ = ["BatchSharding", "make_batch_sharding"]


def _check_axes(fn_name: str, axes: tuple[str, ...], names: tuple[str, ...], what: str) -> None:
    for axis in axes:
        if axis not in names:
            raise ValueError(
                f"{fn_name}: batch_axis {axis!r} is not an axis of {what}; its axes: "
                + (", ".join(map(repr, names)) or "(none)")
            )


@dataclasses.dataclass(frozen=True)
class BatchSharding:
    """Where a vmapped solve puts its batch: a mesh and the axes that split the batch.

    Frozen and hashable (a :class:`jax.sharding.Mesh` compares by its devices and
    axis names), so it is part of :class:`Settings` and of the compiled-solve key.

    Attributes:
      fn_name: the public function, for error messages.
      mesh: a :class:`jax.sharding.Mesh` (or ``AbstractMesh``), or ``None`` for the
        ambient mesh (``jax.set_mesh``) at the time the batch is traced.
      axes: the mesh axes that split the batch, or ``None`` for every axis of the
        mesh that is not already manual (inside an enclosing ``shard_map``); ``()``
        keeps the whole batch in one pool.
    """

    fn_name: str
    mesh: Mesh | AbstractMesh | None = None
    axes: tuple[str, ...] | None = None

    def placement(self) -> tuple[Mesh | AbstractMesh | None, tuple[str, ...], int] | None:
        """``(mesh for shard_map, batch axes, devices on them)`` now, or ``None``.

        ``None`` means one pool for the whole batch.

        Read while the batch is traced, so that the ambient mesh is the one of the
        enclosing ``jit``.
        """
        if self.axes == ():
            return None
        ambient = jax.sharding.get_abstract_mesh()
        mesh = self.mesh if self.mesh is not None else ambient
        if mesh is None or mesh.empty:
            return None
        manual = set(ambient.manual_axes) if not ambient.empty else set()
        if self.axes is None:
            axes = tuple(a for a in mesh.axis_names if a not in manual)
        else:
            what = "the mesh" if self.mesh is not None else "the ambient mesh (jax.set_mesh)"
            _check_axes(self.fn_name, self.axes, tuple(mesh.axis_names), what)
            busy = [a for a in self.axes if a in manual]
            if busy:
                raise ValueError(
                    f"{self.fn_name}: batch_axis {busy[0]!r} is already manual "
                    "(the solve is inside a shard_map over it)"
                )
            axes = self.axes
        if not axes:
            return None
        # A one-device mesh goes through shard_map too: arrays whose type carries
        # an explicit sharding (``AxisType.Explicit``, the default of
        # ``jax.make_mesh``) are then handled like the others.
        size = math.prod(mesh.shape[a] for a in axes)
        # shard_map takes the ambient mesh when given none; an explicit mesh is used
        # as given.
        return self.mesh, axes, size

    def solve(
        self,
        pooled: Callable[[Any, Any, int], Any],
        x0: Any,
        args: Any,
        in_batched: tuple[Any, Any],
        num_problems: int,
    ) -> Any | None:
        """The batched result of ``pooled`` run on every device's shard, or ``None``.

        Args:
          pooled: ``(x0s, argss, n) -> batched result`` for ``n`` problems with
            leading axis ``n`` (the work pool).
          x0, args: the inputs of the vmap rule: batched leaves have leading axis
            ``num_problems``, unbatched ones are shared by all problems.
          in_batched: which leaves of ``(x0, args)`` are batched (trees of bools).
          num_problems: the batch size.

        Returns ``None`` when no mesh splits the batch (then one pool solves it).
        """
        where = self.placement()
        if where is None:
            return None
        mesh, axes, size = where
        local = -(-num_problems // size)
        padded = local * size

        def pad(tree, batched):
            # Copies of the last problem fill the last shard; their results are dropped.
            def one(a, b):
                if not b or padded == num_problems:
                    return a
                tail = jnp.broadcast_to(a[-1:], (padded - num_problems,) + a.shape[1:])
                return jnp.concatenate([a, tail], axis=0)

            return jax.tree.map(one, tree, batched)

        def broadcast(tree, batched):
            return jax.tree.map(
                lambda a, b: a if b else jnp.broadcast_to(a, (local,) + jnp.shape(a)),
                tree,
                batched,
            )

        def on_shard(x0_shard, args_shard):
            x0s = broadcast(x0_shard, in_batched[0])
            argss = broadcast(args_shard, in_batched[1])
            return pooled(x0s, argss, local)

        spec = PartitionSpec(axes if len(axes) > 1 else axes[0])
        in_specs = tuple(
            jax.tree.map(lambda b: spec if b else PartitionSpec(), batched)
            for batched in in_batched
        )
        sharded = jax.shard_map(
            on_shard,
            mesh=mesh,
            in_specs=in_specs,
            out_specs=spec,
            axis_names=frozenset(axes),
            check_vma=False,
        )
        out = sharded(pad(x0, in_batched[0]), pad(args, in_batched[1]))
        if padded != num_problems:
            out = jax.tree.map(lambda a: a[:num_problems], out)
        return out


def make_batch_sharding(fn_name: str, mesh: Any, batch_axis: Any) -> BatchSharding:
    """Check the ``mesh`` and ``batch_axis`` arguments of ``fn_name``."""
    if mesh is not None and not isinstance(mesh, (Mesh, AbstractMesh)):
        raise TypeError(
            f"{fn_name}: mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}"
        )
    if batch_axis is None:
        axes = None
    elif isinstance(batch_axis, str):
        axes = (batch_axis,)
    elif isinstance(batch_axis, (tuple, list)) and all(isinstance(a, str) for a in batch_axis):
        axes = tuple(batch_axis)
    else:
        raise TypeError(
            f"{fn_name}: batch_axis must be a mesh axis name, a tuple of them or None, "
            f"got {batch_axis!r}"
        )
    if axes is not None and len(set(axes)) != len(axes):
        raise ValueError(f"{fn_name}: batch_axis names an axis twice: {batch_axis!r}")
    if mesh is not None and axes:
        _check_axes(fn_name, axes, tuple(mesh.axis_names), "the mesh")
    return BatchSharding(fn_name, mesh, axes)
