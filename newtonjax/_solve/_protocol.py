"""What the solve loop reads from an update rule's state: a fixed protocol.

A rule's state (any nesting of optax states) may hold scalar fields with these
names, which the loop reads with :func:`optax.tree_utils.tree_get_all_with_path`
(the first match in the state's flattening order, as optax's own
``value_and_grad_from_state`` looks fields up by name); a rule that lacks a field
simply does not report it:

* ``predicted_reduction`` and ``actual_reduction`` — the model's and the
  objective's decrease at the step that was tried (rules that test their trial
  point); with both present the loop applies the predicted-reduction ``ftol``
  test;
* ``radius``, else ``damping`` — recorded in the history as
  ``damping_or_radius``;
* ``cg_steps`` — CG iterations of the step, added to the curvature count;
* ``subproblem_status``, else ``cg_status`` — the
  :class:`newtonjax.linalg.SolverStatus` of the step's subproblem solve;
* ``gradient_cosine`` — for least squares, MINPACK's cosine
  ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖)`` at the point the update started from, with the
  Jacobian the rule built there; the loop then applies the default ``gtol`` test
  to it (and stops at that point) instead of forming ``J`` itself.

f and ∇f at the point the updates lead to are read from the states that carry
them by a type test (:data:`CARRYING_STATES`, fields ``value`` and ``grad``), and
only for methods whose record says so (:attr:`Method.carries_values`).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from newtonjax._transforms._gauss_newton import ScaleByLevenbergMarquardtState
from newtonjax._transforms._trust_region import ScaleByTrustRegionState

__all__ = [
    "CARRYING_STATES",
    "carried_value_and_grad",
    "cg_steps",
    "damping_or_radius",
    "gradient_cosine",
    "reductions",
    "subproblem_status",
]

CARRYING_STATES = (ScaleByLevenbergMarquardtState, ScaleByTrustRegionState)


def _scalar(state: Any, *names: str) -> jax.Array | None:
    """The first scalar array field named one of ``names`` (in that order), or None."""
    for name in names:
        for _, value in optax.tree_utils.tree_get_all_with_path(state, name):
            if hasattr(value, "shape") and value.shape == ():
                return value
    return None


def reductions(state) -> tuple[jax.Array, jax.Array] | None:
    """``(predicted_reduction, actual_reduction)`` of the tried step, if reported."""
    predicted = _scalar(state, "predicted_reduction")
    actual = _scalar(state, "actual_reduction")
    return None if predicted is None or actual is None else (predicted, actual)


def damping_or_radius(state) -> jax.Array | None:
    return _scalar(state, "radius", "damping")


def cg_steps(state) -> jax.Array | None:
    return _scalar(state, "cg_steps")


def subproblem_status(state) -> jax.Array | None:
    return _scalar(state, "subproblem_status", "cg_status")


def gradient_cosine(state) -> jax.Array | None:
    return _scalar(state, "gradient_cosine")


def carried_value_and_grad(state):
    """``(value, grad)`` at the updated params from the last carrying block, if any."""
    found = None
    for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, CARRYING_STATES)):
        if isinstance(node, CARRYING_STATES):
            found = node.value, node.grad
    return found
