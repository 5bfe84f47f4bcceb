"""What a solve returns: :class:`SolveResult` and its :class:`Status` codes."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from newtonjax import linalg
from newtonjax._status import CODES, StatusEnum
from newtonjax._tree import PyTree

__all__ = ["Status", "SolveResult", "RUNNING", "NO_SUBPROBLEM"]


class Status(StatusEnum):
    """Why a solve stopped (``result.status``; ``result.message`` reads it).

    The codes belong to the family of :mod:`newtonjax._status`: ``MAX_STEPS`` and
    ``NONFINITE`` have the codes of :class:`newtonjax.linalg.SolverStatus`, and
    ``GTOL`` that of its ``CONVERGED``.
    """

    GTOL = CODES["CONVERGED"], "converged: gradient test <= gtol (or ‖∇f‖∞ <= gtol_abs)"
    FTOL = CODES["FTOL"], "converged: relative decrease of f <= ftol"
    XTOL = CODES["XTOL"], "converged: relative step size <= xtol"
    MAX_STEPS = CODES["MAX_STEPS"], "stopped: maxiter iterations reached"
    NONFINITE = (
        CODES["NONFINITE"],
        "failed: a non-finite value or gradient appeared; the last finite params are returned",
    )
    STALLED = (
        CODES["STALLED"],
        "stopped: no progress possible (rounding limit) before the tolerances were met",
    )
    SUBPROBLEM_FAILED = (
        CODES["SUBPROBLEM_FAILED"],
        "failed: the subproblem solver of the last step failed (see subproblem_status); "
        "the last finite params are returned",
    )


SUCCESS = (Status.GTOL, Status.FTOL, Status.XTOL)
RUNNING = -1  # the loop's status while no test has stopped it
NO_SUBPROBLEM = -1  # subproblem_status of a rule that reports none


class SolveResult(NamedTuple):
    """Result of :func:`minimize` and :func:`least_squares` (a pytree: jit/vmap-able).

    Attributes:
      params: the solution (structure of ``x0``).
      value: ``f`` at ``params`` (``½‖r‖²`` for least squares).
      grad: ``∇f`` at ``params``.
      grad_norm: ``‖∇f‖∞`` at ``params``.
      num_steps: iterations run (rejected steps included).
      success: whether a convergence test (gtol, ftol, xtol) stopped the solve.
      status: a :class:`Status` code.
      num_fun: objective evaluations.
      num_grad: gradient evaluations.
      num_curvature: Hessian, GGN or Jacobian products (a dense ``n × n`` matrix
        counts ``n``).
      subproblem_status: the :class:`newtonjax.linalg.SolverStatus` code of the
        last step's subproblem solve (``-1`` for rules that report none).
      history: per-iteration records (``value``, ``grad_norm``, ``step_norm``,
        ``damping_or_radius``; NaN past ``num_steps``) when ``history=True``,
        else ``None``.
    """

    params: PyTree
    value: jax.Array
    grad: PyTree
    grad_norm: jax.Array
    num_steps: jax.Array
    success: jax.Array
    status: jax.Array
    num_fun: jax.Array
    num_grad: jax.Array
    num_curvature: jax.Array
    subproblem_status: jax.Array
    history: dict[str, jax.Array] | None = None

    @property
    def message(self) -> str | list[str]:
        """The status as text (on the host; a list for a batch of results)."""
        codes = np.asarray(self.status).ravel()
        subs = np.broadcast_to(np.asarray(self.subproblem_status), np.shape(self.status)).ravel()
        texts = [_message(int(c), int(s)) for c, s in zip(codes, subs, strict=True)]
        return texts[0] if np.ndim(self.status) == 0 else texts


def _message(code: int, subproblem: int) -> str:
    text = Status(code).message
    if code == Status.SUBPROBLEM_FAILED and subproblem != NO_SUBPROBLEM:
        text += f"; subproblem: {linalg.SolverStatus(subproblem).message}"
    return text
