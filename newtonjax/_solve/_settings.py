"""The loop's settings: one frozen, hashable record, also the compiled-solve key."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Settings", "default_tolerances", "make_settings"]


def default_tolerances(dtype) -> dict[str, float]:
    """Stopping defaults: tight in float64, loose in float32 (and below).

    ``gtol`` is absolute on ``‖∇f‖∞``; ``ftol`` and ``xtol`` are relative.
    """
    if jnp.finfo(dtype).bits >= 64:
        return {"gtol": 1e-10, "ftol": 1e-15, "xtol": 1e-12}
    return {"gtol": 1e-5, "ftol": 1e-6, "xtol": 1e-6}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Tolerances and loop options of one solve (see :func:`minimize`).

    Hashable when every tolerance is a Python number: it is then part of the key
    of the compiled solve; a traced or array tolerance makes it unhashable and the
    solve is compiled by the enclosing transformation instead.

    Attributes:
      gtol: absolute tolerance on ``‖∇f‖∞``.
      ftol: relative decrease tolerance on ``f``.
      xtol: relative step tolerance.
      maxiter: iteration cap (rejected steps included).
      stall_limit: iterations without decrease before ``Status.STALLED``.
      history: whether to record per-iteration values.
      verbose: whether to print each iteration.
      lanes: work-pool width under ``vmap`` (``None``: :func:`default_lanes`).
    """

    gtol: float | jax.Array
    ftol: float | jax.Array
    xtol: float | jax.Array
    maxiter: int = 200
    stall_limit: int = 25
    history: bool = False
    verbose: bool = False
    lanes: int | None = None

    def tolerances(self, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(gtol, ftol, xtol)`` as arrays of ``dtype``."""
        return tuple(jnp.asarray(t, dtype) for t in (self.gtol, self.ftol, self.xtol))

    def hashable(self) -> bool:
        try:
            hash(self)
        except TypeError:
            return False
        return True


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_tolerance(fn_name, name, value):
    if isinstance(value, (int, float)) and (value < 0 or value != value):
        raise ValueError(f"{fn_name}: {name} must be >= 0, got {value}")


def make_settings(fn_name, dtype, *, gtol, ftol, xtol, maxiter, stall_limit, history,
                  verbose, batch_lanes) -> Settings:  # fmt: skip
    """Check the loop options of ``fn_name`` and fill in the dtype's default tolerances."""
    if not _is_int(maxiter) or maxiter < 1:
        raise ValueError(f"{fn_name}: maxiter must be an int >= 1, got {maxiter!r}")
    if batch_lanes is not None and (not _is_int(batch_lanes) or batch_lanes < 1):
        raise ValueError(f"{fn_name}: batch_lanes must be an int >= 1 or None, got {batch_lanes!r}")
    if not _is_int(stall_limit) or stall_limit < 1:
        raise ValueError(f"{fn_name}: stall_limit must be an int >= 1, got {stall_limit!r}")
    for name, value in (("gtol", gtol), ("ftol", ftol), ("xtol", xtol)):
        _check_tolerance(fn_name, name, value)
    defaults = default_tolerances(dtype)
    return Settings(
        gtol=defaults["gtol"] if gtol is None else gtol,
        ftol=defaults["ftol"] if ftol is None else ftol,
        xtol=defaults["xtol"] if xtol is None else xtol,
        maxiter=int(maxiter),
        stall_limit=int(stall_limit),
        history=bool(history),
        verbose=bool(verbose),
        lanes=None if batch_lanes is None else int(batch_lanes),
    )
