"""The optimizers an experiment can name: an explicit registry, no ``getattr``.

newtonjax's update rules and plain optax optimizers side by side. Each entry is a
factory whose keyword arguments are the hyperparameters a config may set; the
config validator checks names against the factory's signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import optax

import newtonjax as nj

__all__ = ["OPTIMIZERS", "STRUCTURED", "build", "validate", "needs_structure"]


def _newton_cg(learning_rate: float = 1.0, damping: float = 0.0, max_cg_steps: int | None = None):
    return nj.newton(learning_rate, damping, solver="cg", max_cg_steps=max_cg_steps)


def _saddle_free_newton(learning_rate: float = 1.0, damping: float = 0.0):
    return nj.newton(learning_rate, damping, saddle_free=True)


def _lbfgs(learning_rate: float | None = None, memory_size: int = 10):
    return optax.lbfgs(learning_rate=learning_rate, memory_size=int(memory_size))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    # newtonjax
    "newton": nj.newton,
    "newton_cg": _newton_cg,
    "saddle_free_newton": _saddle_free_newton,
    "trust_region": nj.trust_region,
    "gauss_newton": nj.gauss_newton,
    "levenberg_marquardt": nj.levenberg_marquardt,
    "hessian_free": nj.hessian_free,
    # optax
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "lbfgs": _lbfgs,
}

#: Rules that need a structured objective (least squares or composite), as the
#: solves' method table records them.
STRUCTURED = tuple(name for name, method in nj.METHODS.items() if method.needs_structure)


def needs_structure(name: str) -> bool:
    return name in STRUCTURED


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    params = inspect.signature(OPTIMIZERS[name]).parameters
    return {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def validate(name: str, params: dict[str, Any], path: str) -> None:
    """Raise :class:`experiments.config.ConfigError` for an unknown name or parameter."""
    from newtonjax.experiments.config import ConfigError, validate_params

    if name not in OPTIMIZERS:
        raise ConfigError(
            f"{path}.name: unknown optimizer {name!r}; valid choices: " + ", ".join(OPTIMIZERS)
        )
    validate_params(_parameters(name), params, f"{path}.params")
    required = [k for k, p in _parameters(name).items() if p.default is inspect.Parameter.empty]
    missing = [k for k in required if k not in params]
    if missing:
        raise ConfigError(f"{path}.params: {name} needs {', '.join(missing)}")


def build(name: str, params: dict[str, Any]) -> optax.GradientTransformation:
    """The optax transform for a validated registry entry."""
    return OPTIMIZERS[name](**params)
