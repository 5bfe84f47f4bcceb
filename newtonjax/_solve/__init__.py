"""Solve loops: ``minimize`` and ``least_squares`` (layer 5).

Each solve is one ``lax.while_loop`` around an optax update rule, so it runs inside
``jit`` without host round-trips, batches under ``vmap`` (a work pool: a lane whose
problem has finished takes the next waiting one), and is differentiable with
respect to ``args`` in every JAX mode by the implicit function theorem.

Modules:

* :mod:`._api` — :func:`minimize`, :func:`least_squares`, argument checks and the
  compiled-solve cache;
* :mod:`._methods` — the method table :data:`METHODS` (one :class:`Method` record
  per named method);
* :mod:`._settings` — :class:`Settings`, the tolerances and loop options (also the
  cache key), and :func:`default_tolerances`;
* :mod:`._protocol` — the names the loop reads from a rule's state;
* :mod:`._loop` — start, iteration, convergence tests, result;
* :mod:`._pool` — the work pool for batches, :func:`default_lanes`;
* :mod:`._sharded` — batched solves across devices (one pool per device, via
  :func:`jax.shard_map`);
* :mod:`._implicit` — the implicit differentiation rule;
* :mod:`._result` — :class:`SolveResult` and :class:`Status`.
"""

from newtonjax._solve._api import least_squares, minimize
from newtonjax._solve._methods import METHODS, Method
from newtonjax._solve._pool import default_lanes
from newtonjax._solve._result import SolveResult, Status
from newtonjax._solve._settings import Settings, default_tolerances

__all__ = [
    "METHODS",
    "Method",
    "Settings",
    "SolveResult",
    "Status",
    "default_lanes",
    "default_tolerances",
    "least_squares",
    "minimize",
]
