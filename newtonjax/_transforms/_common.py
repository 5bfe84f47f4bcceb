"""What every newtonjax update rule shares: the ``value_fn`` protocol and acceptance.

Argument checks live in :mod:`newtonjax._checks`.

The only extra argument is optax's ``value_fn`` (``params -> scalar``), with optional
``value``/``grad`` at the current params; other keyword arguments are routed to
``value_fn`` when its signature names them (as optax's line searches do) and are
ignored otherwise, so a chain can carry arguments meant for other blocks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from newtonjax._checks import check_choice
from newtonjax._tree import PyTree, tree_sub, tree_vdot

__all__ = [
    "bind_value_fn",
    "bound_kwargs",
    "acceptance",
    "model_reduction",
    "trial_value",
    "with_value_and_grad",
]


def _signature_names(fn: Callable) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return names, var_kw


def bind_value_fn(
    fn_name: str, value_fn: Callable | None, extra_args: dict[str, Any]
) -> Callable[[PyTree], jax.Array]:
    """``params -> value_fn(params, **kw)`` with the extra arguments ``value_fn`` accepts."""
    if value_fn is None:
        raise TypeError(
            f"{fn_name}: update() needs the objective as the keyword argument "
            "value_fn (params -> scalar loss), e.g. "
            "tx.update(grads, state, params, value_fn=loss)"
        )
    if not callable(value_fn):
        raise TypeError(f"{fn_name}: value_fn must be callable, got {type(value_fn).__name__}")
    if not extra_args:
        return value_fn
    names, var_kw = _signature_names(value_fn)
    kwargs = {k: v for k, v in extra_args.items() if var_kw or k in names}
    if not kwargs:
        return value_fn
    return lambda p: value_fn(p, **kwargs)


def bound_kwargs(value_fn: Callable, extra_args: dict[str, Any]) -> dict[str, Any]:
    """The extra arguments that ``value_fn``'s signature accepts."""
    names, var_kw = _signature_names(value_fn)
    return {k: v for k, v in extra_args.items() if var_kw or k in names}


def trial_value(fn: Callable[[PyTree], jax.Array], params: PyTree, step: PyTree) -> jax.Array:
    """``fn(params - step)``: the value at the point the alias would move to."""
    return fn(tree_sub(params, step))


def acceptance(
    value: jax.Array,
    new_value: jax.Array,
    predicted_reduction: jax.Array,
    threshold: jax.Array | float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gain ratio ``ρ = (f − f_new) / pred`` and whether the step is accepted.

    A non-finite trial value, a non-positive prediction or ``ρ <= threshold``
    rejects the step; ``ρ`` is then ``-inf`` for a non-finite trial value, so radius
    and damping rules see the worst case rather than NaN.

    Returns:
      ``(rho, accepted, actual_reduction)``.
    """
    actual = value - new_value
    finite = jnp.isfinite(new_value) & jnp.isfinite(predicted_reduction)
    safe_pred = jnp.where(predicted_reduction > 0, predicted_reduction, 1.0)
    rho = jnp.where(predicted_reduction > 0, actual / safe_pred, -jnp.inf)
    rho = jnp.where(finite, rho, -jnp.inf)
    # An exactly-zero prediction with zero actual change (at a stationary point) is
    # neither progress nor failure: reject, which leaves params where they are.
    accepted = finite & (predicted_reduction > 0) & (rho > threshold)
    return rho, accepted, jnp.where(finite, actual, -jnp.inf)


def model_reduction(grad: PyTree, step: PyTree, curvature_step: PyTree) -> jax.Array:
    """Predicted decrease of the quadratic model for the move ``-step``.

    With the move ``p = -step``: ``m(0) − m(p) = g·step − ½ step·B step``.
    """
    return tree_vdot(grad, step) - 0.5 * tree_vdot(step, curvature_step)


def with_value_and_grad(
    fn_name: str, tx: optax.GradientTransformationExtraArgs
) -> optax.GradientTransformationExtraArgs:
    """Make ``value=``/``grad=`` optional for a chain that holds an optax line search.

    optax's line searches require both keywords. An alias that owns its line search
    fills them in when missing: ``grad`` is the incoming updates (the gradient, as
    every block here assumes) and ``value`` is ``value_fn(params)``.
    """

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        fn = bind_value_fn(fn_name, value_fn, extra)
        if grad is None:
            grad = updates
        if value is None:
            value = fn(params)
        return tx.update(updates, state, params, value_fn=value_fn, value=value, grad=grad, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def chain_with_linesearch(
    fn_name: str,
    direction: optax.GradientTransformationExtraArgs,
    learning_rate: Any,
    linesearch: optax.GradientTransformationExtraArgs | str | None,
    max_linesearch_steps: int,
) -> optax.GradientTransformationExtraArgs:
    """``direction`` → ``scale_by_learning_rate`` → optional line search, as one chain.

    ``"backtracking"`` is optax's Armijo search started at the full step every time
    (``increase_factor=inf``), so a Newton-type direction keeps its local rate;
    ``"zoom"`` is optax's strong-Wolfe search; ``None`` takes the fixed step.
    """
    if isinstance(linesearch, str):
        check_choice(fn_name, "linesearch", linesearch, ("backtracking", "zoom"))
        if linesearch == "backtracking":
            linesearch = optax.scale_by_backtracking_linesearch(
                max_backtracking_steps=max_linesearch_steps,
                decrease_factor=0.5,
                increase_factor=jnp.inf,
                max_learning_rate=1.0,
            )
        else:
            linesearch = optax.scale_by_zoom_linesearch(
                max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"
            )
    blocks = [direction, optax.scale_by_learning_rate(learning_rate)]
    if linesearch is None:
        return optax.chain(*blocks)
    return with_value_and_grad(fn_name, optax.chain(*blocks, linesearch))
