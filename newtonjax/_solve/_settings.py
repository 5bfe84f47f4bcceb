"""The loop's settings: one frozen, hashable record, also the compiled-solve key."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "COSINE_JACOBIAN_MAX",
    "Settings",
    "default_maxiter",
    "default_tolerances",
    "make_settings",
]


#: Largest ``n`` for which a least-squares solve whose rule does not report its
#: Jacobian's column norms forms ``J`` (``n`` forward products) for the cosine test.
COSINE_JACOBIAN_MAX = 100

#: Upper end of the default iteration cap (see :func:`default_maxiter`).
MAXITER_CAP = 1000


def default_maxiter(n: int) -> int:
    """The default iteration cap for ``n`` parameters: ``min(100·(n + 1), 1000)``.

    MINPACK's budget (``lmder1``'s ``maxfev = 100·(n + 1)``, Moré, Garbow &
    Hillstrom 1980, MINPACK-1 User Guide §4): a trust-region or line-search Newton
    method needs more steps through the global phase when there are more
    directions to resolve (on the Moré–Garbow–Hillstrom set, Meyer's n = 3 takes
    over 250 Newton steps and Brown–Dennis's n = 4 over 200 Gauss–Newton ones),
    while its local convergence does not depend on ``n``. It gives 200 for n = 1 and
    grows by 100 per parameter up to 1000 (n >= 9): a solve that spins to the cap
    wastes at most that many iterations, which keeps large problems and batched
    solves (where one lane can hold a pool) bounded. scipy's ``minimize`` uses
    ``200·n`` without a bound. Rounding limits stop a solve sooner
    (``Status.STALLED``).
    """
    return min(100 * (n + 1), MAXITER_CAP)


def default_tolerances(dtype) -> dict[str, float]:
    """Stopping defaults of :func:`minimize` and :func:`least_squares`, and the tests.

    ========  ==========  ==========================================
    name      float64     float32 (and below)
    ========  ==========  ==========================================
    gtol      1e-10       1e-5
    ftol      1e-15       1e-6
    xtol      1e-12       1e-6
    gtol_abs  off         off
    maxiter   min(100·(n + 1), 1000), any dtype (:func:`default_maxiter`)
    ========  ==========  ==========================================

    The tests, at the new point ``x`` with ``f = f(x)``, ``g = ∇f(x)`` (the first
    that holds wins; every one but ``maxiter`` and the rounding limit is a success):

    * **gtol, least squares** (``f = ½‖r‖²``, ``g = Jᵀr``): MINPACK's cosine test
      (Moré, Garbow & Hillstrom 1980, MINPACK-1 User Guide §2.3, ``lmder``'s
      ``gtol``)::

          max_j |J_jᵀ r| / (‖J_j‖ ‖r‖) <= gtol

      the cosine of the angle between ``r`` and each column ``J_j`` of the
      Jacobian (a column with ``J_jᵀ r = 0`` counts 0). It is invariant to scaling
      the residuals by a constant and the parameters by a diagonal matrix. The
      column norms are read from the rule where it has them: the
      Levenberg–Marquardt rule with the dense solver (or ``scaling="marquardt"``)
      reports the cosine at the point each update starts from, with the Jacobian it
      built there, and a hit stops the solve at that point (as ``lmder`` tests
      before its inner loop), so the test costs no Jacobian product. Other methods
      form ``J`` at the new point (``n`` forward products) when ``n <=
      COSINE_JACOBIAN_MAX`` (100), and otherwise apply the relative test below.
    * **gtol, minimize**: the relative gradient of Dennis & Schnabel (1983, §7.2)::

          max_i |g_i| · s_i / max(|f|, tiny) <= gtol,   s_i = max(|x_i|, |x0_i|)

      (``s_i = 1`` where ``x_i = x0_i = 0``), the relative change of ``f`` per
      relative change of ``x_i``. Dennis & Schnabel's ``typf`` and ``typx`` are
      taken from the problem rather than set to 1: with ``typf = 1`` the test is
      absolute for ``|f| < 1`` and fires early on small-residual problems, and with
      ``typx = 1`` it is absolute for small ``|x_i|``. So the test is invariant to
      scaling ``f`` by a constant and ``x`` by a diagonal matrix (for components
      that are non-zero at ``x`` or ``x0``). Where ``f* = 0`` the ratio does not
      go to 0 (``|g|·|x|/f`` grows like ``‖x‖/‖x − x*‖``): those solves stop on
      ``ftol``/``xtol`` or an exact zero gradient.
    * **gtol_abs** (only when given): ``‖∇f‖∞ <= gtol_abs``, absolute.
    * **ftol**: an accepted step with ``f_old − f_new <= ftol·max(|f_old|,
      |f_new|)``, or, for rules that test their steps, a model-predicted reduction
      below ``ftol·|f|`` at a finite trial point.
    * **xtol**: an accepted step with ``max_i |Δx_i| / (xtol + |x_i|) <= xtol``.
    * the rounding limit: ``stall_limit`` iterations without decrease
      (``Status.STALLED``, not a success), then ``maxiter``.

    The float64 ``gtol`` sits well above the rounding floor of the cosine (about
    ``eps·√m``), so it is reached on the NIST StRD problems at their certified
    values (``tests/test_nist_lm.py``).
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
      gtol: tolerance of the scale-invariant gradient test (see
        :func:`default_tolerances`).
      ftol: relative decrease tolerance on ``f``.
      xtol: relative step tolerance.
      maxiter: iteration cap (rejected steps included); ``None``:
        :func:`default_maxiter` of the number of parameters, set by
        :meth:`for_size` when the solve is built.
      stall_limit: iterations without decrease before ``Status.STALLED``.
      history: whether to record per-iteration values.
      verbose: whether to print each iteration.
      lanes: work-pool width under ``vmap`` (``None``: :func:`default_lanes`).
      gtol_abs: absolute tolerance on ``‖∇f‖∞``, or ``None`` (no absolute test).
      batch_sharding: where a vmapped batch goes across devices (a
        :class:`newtonjax._solve._sharded.BatchSharding`: a mesh and its batch
        axes), or ``None`` for one work pool.
    """

    gtol: float | jax.Array
    ftol: float | jax.Array
    xtol: float | jax.Array
    maxiter: int | None = None
    stall_limit: int = 25
    history: bool = False
    verbose: bool = False
    lanes: int | None = None
    gtol_abs: float | jax.Array | None = None
    batch_sharding: Any = None

    def tolerances(self, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(gtol, ftol, xtol)`` as arrays of ``dtype``."""
        return tuple(jnp.asarray(t, dtype) for t in (self.gtol, self.ftol, self.xtol))

    def for_size(self, n: int) -> Settings:
        """These settings with the default ``maxiter`` resolved for ``n`` parameters."""
        if self.maxiter is not None:
            return self
        return dataclasses.replace(self, maxiter=default_maxiter(n))

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
                  verbose, batch_lanes, gtol_abs=None,
                  batch_sharding=None) -> Settings:  # fmt: skip
    """Check the loop options of ``fn_name`` and fill in the dtype's default tolerances."""
    if maxiter is not None and (not _is_int(maxiter) or maxiter < 1):
        raise ValueError(f"{fn_name}: maxiter must be an int >= 1 or None, got {maxiter!r}")
    if batch_lanes is not None and (not _is_int(batch_lanes) or batch_lanes < 1):
        raise ValueError(f"{fn_name}: batch_lanes must be an int >= 1 or None, got {batch_lanes!r}")
    if not _is_int(stall_limit) or stall_limit < 1:
        raise ValueError(f"{fn_name}: stall_limit must be an int >= 1, got {stall_limit!r}")
    for name, value in (("gtol", gtol), ("ftol", ftol), ("xtol", xtol), ("gtol_abs", gtol_abs)):
        _check_tolerance(fn_name, name, value)
    defaults = default_tolerances(dtype)
    return Settings(
        gtol=defaults["gtol"] if gtol is None else gtol,
        ftol=defaults["ftol"] if ftol is None else ftol,
        xtol=defaults["xtol"] if xtol is None else xtol,
        maxiter=None if maxiter is None else int(maxiter),
        stall_limit=int(stall_limit),
        history=bool(history),
        verbose=bool(verbose),
        lanes=None if batch_lanes is None else int(batch_lanes),
        gtol_abs=gtol_abs,
        batch_sharding=batch_sharding,
    )
