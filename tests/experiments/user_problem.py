"""A user-defined problem, loaded by configs as ``tests.experiments.user_problem:build``."""

import jax.numpy as jnp

from newtonjax.experiments.problems.base import Problem


def build(scale: float = 1.0, dim: int = 3) -> Problem:
    """A convex quartic ``Σ scale·(w − 1)⁴ + (w − 1)²``."""
    return Problem(
        name="user_quartic",
        objective=lambda w: jnp.sum(scale * (w - 1.0) ** 4 + (w - 1.0) ** 2),
        init_params=jnp.zeros(dim, dtype=jnp.result_type(float)),
        target_loss=1e-12,
        report=lambda w: {"max_error": float(jnp.max(jnp.abs(w - 1.0)))},
    )


def not_a_problem(scale: float = 1.0):
    return {"scale": scale}
