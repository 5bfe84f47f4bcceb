"""One family of status codes for solvers and solves (layer 0).

Every outcome has one integer code across the package, so that a code means the
same thing wherever it appears (a linear solve's ``status``, a solve's ``status``)
and a solve can pass on the status of the subproblem that ended it. Each enum of
the family is a :class:`StatusEnum` whose members carry their message, as lineax's
``RESULTS`` do and optimistix's extend them.

Codes (shared outcomes first)::

    0  CONVERGED            the main tolerance was met (for a solve: the gradient test)
    1  MAX_STEPS            the step budget ran out
    2  NEGATIVE_CURVATURE   a direction with dᵀHd <= 0 (linear solvers)
    3  BOUNDARY             a trust-region solver stopped on the boundary
    4  NONFINITE            a non-finite value appeared
    5  FTOL                 a solve's relative decrease test
    6  XTOL                 a solve's relative step test
    7  STALLED              a solve can make no more progress (rounding limit)
    8  SUBPROBLEM_FAILED    a solve ended because its subproblem solver failed
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["StatusEnum", "CODES"]

#: The integer code of every outcome in the family.
CODES = {
    "CONVERGED": 0,
    "MAX_STEPS": 1,
    "NEGATIVE_CURVATURE": 2,
    "BOUNDARY": 3,
    "NONFINITE": 4,
    "FTOL": 5,
    "XTOL": 6,
    "STALLED": 7,
    "SUBPROBLEM_FAILED": 8,
}


class StatusEnum(enum.IntEnum):
    """Base of the status enums: ``Member = (code, message)``.

    Members compare equal to their integer codes, so they work as ``jnp.where``
    operands and against traced ``int32`` statuses; ``message`` is the text, and
    :meth:`describe` reads an array of codes on the host.
    """

    def __new__(cls, value: int, message: str = ""):
        member = int.__new__(cls, value)
        member._value_ = value
        member.message = message
        return member

    @classmethod
    def describe(cls, codes) -> str | list[str]:
        """The message of a code, or a list of messages for an array of codes."""
        arr = np.asarray(codes)
        if arr.ndim == 0:
            return cls(int(arr)).message
        return [cls(int(c)).message for c in arr.ravel()]
