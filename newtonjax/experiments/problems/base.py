"""What a problem is, and the registry that names them.

A problem builder is a plain function with keyword arguments (its hyperparameters,
validated against the signature when a config is read) that returns a
:class:`Problem`. Builders register under a name with :func:`register`; a config
may also name any ``module:function`` that returns a :class:`Problem`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = [
    "Problem",
    "StatisticalModel",
    "LIKELIHOODS",
    "register",
    "PROBLEMS",
    "resolve",
    "builder_parameters",
]

#: Likelihoods a :class:`StatisticalModel` can declare.
LIKELIHOODS: tuple[str, ...] = ("gaussian", "bernoulli")


@dataclasses.dataclass(frozen=True)
class StatisticalModel:
    """The likelihood behind a problem's objective, for the ``uncertainty:`` section.

    The objective is ``negative_log_likelihood(θ) + ½ prior_precision ‖θ‖²`` (a
    negative log joint with the isotropic prior ``N(0, I / prior_precision)``, or no
    prior when ``prior_precision`` is 0). The runner reads the parts separately: the
    Laplace approximation and its evidence need the likelihood and the prior apart,
    and the bands and predictive maps need the model's response at new inputs.

    Attributes:
      model_fn: ``(params, inputs) -> response``: the mean response of a regression
        (``"gaussian"``) or the logits of a binary classifier (``"bernoulli"``), one
        value per input row.
      inputs: the observed inputs (host array, ``(m,)`` or ``(m, d)``).
      targets: the observed responses or 0/1 labels (host array, ``(m,)``).
      likelihood: ``"gaussian"`` (residuals ``model_fn(θ, x) − y``) or
        ``"bernoulli"`` (labels with logits ``model_fn(θ, x)``).
      negative_log_likelihood: ``params -> scalar``; a
        :func:`newtonjax.composite_objective` when it has that structure (the GGN
        needs it).
      prior_precision: δ >= 0 of the prior inside the objective.
      plot_inputs: inputs at which figures draw the fit and its uncertainty:
        ``(k,)`` for a curve, ``(k, 2)`` for a map; ``None`` for no figure.
    """

    model_fn: Callable[[Any, Any], Any]
    inputs: Any
    targets: Any
    likelihood: str
    negative_log_likelihood: Callable[[Any], Any]
    prior_precision: float = 0.0
    plot_inputs: Any = None

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"StatisticalModel: unknown likelihood {self.likelihood!r}; valid choices: "
                + ", ".join(LIKELIHOODS)
            )


@dataclasses.dataclass(frozen=True)
class Problem:
    """An optimization problem, ready to run.

    Attributes:
      name: display name.
      objective: ``params -> scalar loss`` for one instance; a
        ``nj.least_squares_objective`` / ``nj.composite_objective`` when the problem
        has that structure (Gauss–Newton methods need it).
      init_params: the starting point (for ``batch_size > 0``: every leaf has a
        leading axis of that size, one instance per row, and ``objective`` takes one
        instance; the runner vmaps).
      batch_size: 0 for a single problem, else the number of instances.
      metrics: optional ``params -> dict[str, scalar]`` (e.g. accuracy) logged each
        step alongside the loss; one instance's params (and ``data`` as a second
        argument when the problem has data).
      report: optional ``params -> dict`` run once on the final params of each
        optimizer (host side; e.g. the certified values next to the fit, the
        critical-point class); written to the summary. For batch problems it
        receives the whole batch of final params.
      plot: optional ``(results, run_dir) -> list[path]`` for problem-specific
        figures, given ``{label: final params}``.
      target_loss: default loss target for "steps/time to target" in the summary.
      description: one line for the summary.
      data: optional data passed as ``objective(params, data)`` (for batch problems
        with the same leading axis as ``init_params``, vmapped together with it).
      statistical_model: optional :class:`StatisticalModel` when the objective is a
        negative log joint (curve fits, Bayesian models): what the ``uncertainty:``
        section of a config reads for priors, bands and predictive maps.
    """

    name: str
    objective: Callable[..., Any]
    init_params: Any
    batch_size: int = 0
    metrics: Callable[[Any], dict[str, Any]] | None = None
    report: Callable[[Any], dict[str, Any]] | None = None
    plot: Callable[[dict[str, Any], Any], list[Any]] | None = None
    target_loss: float | None = None
    description: str = ""
    data: Any = None
    statistical_model: StatisticalModel | None = None


PROBLEMS: dict[str, Callable[..., Problem]] = {}


def register(name: str) -> Callable[[Callable[..., Problem]], Callable[..., Problem]]:
    """Decorator: register a problem builder under ``name``."""

    def wrap(builder: Callable[..., Problem]) -> Callable[..., Problem]:
        if name in PROBLEMS:
            raise ValueError(f"problem {name!r} is already registered")
        PROBLEMS[name] = builder
        return builder

    return wrap


def resolve(name: str) -> Callable[..., Problem]:
    """The builder for a registered name or a ``module:function`` path.

    Raises:
      KeyError: with the valid names, for an unknown name.
      ImportError / AttributeError: for a ``module:function`` that cannot be found.
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
        module = importlib.import_module(module_name)
        builder = getattr(module, attr)
        if not callable(builder):
            raise TypeError(f"{name} is not callable")
        return builder
    # Importing the built-ins registers them.
    from newtonjax.experiments.problems import builtin  # noqa: F401

    if name not in PROBLEMS:
        raise KeyError(name)
    return PROBLEMS[name]


def builder_parameters(builder: Callable[..., Problem]) -> dict[str, inspect.Parameter]:
    """The keyword hyperparameters a builder accepts (``key`` excluded: it is the seed)."""
    params = inspect.signature(builder).parameters
    return {k: p for k, p in params.items() if k != "key"}
