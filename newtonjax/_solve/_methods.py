"""The method table: each named method of the solves, described once.

A :class:`Method` records how to build the update rule and what the loop, the
evaluation counters and the experiment runner need to know about it. A user's
optax transform gets the record :data:`CUSTOM` (nothing assumed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

from newtonjax._objectives import CompositeObjective
from newtonjax._transforms._gauss_newton import gauss_newton, levenberg_marquardt
from newtonjax._transforms._hessian_free import hessian_free
from newtonjax._transforms._newton import newton
from newtonjax._transforms._trust_region import trust_region

__all__ = ["Method", "METHODS", "CUSTOM", "resolve_method"]

#: Above this size the trust region's default subproblem is Steihaug–CG.
EXACT_SUBPROBLEM_MAX = 1000


@dataclasses.dataclass(frozen=True)
class Method:
    """One solve method.

    Attributes:
      name: the name ``minimize(method=...)`` takes.
      factory: ``factory(n, **options)`` builds the optax rule for ``n`` parameters.
      needs_structure: whether the rule needs a structured objective
        (:func:`~newtonjax.least_squares_objective` or
        :func:`~newtonjax.composite_objective`).
      tests_trial: whether the rule evaluates ``f`` at its trial point itself
        (trust region, Levenberg–Marquardt, Hessian-free): one more evaluation per
        step unless the state carries the values.
      carries_values: whether the rule's state carries ``value`` and ``grad`` at the
        point its updates lead to (optax's ``value_and_grad_from_state``
        convention), so the loop reads them instead of evaluating again.
      carries_jacobian: whether the rule takes the residual's Jacobian at the start
        (:func:`~newtonjax._transforms._levenberg_marquardt.seed_jacobian`) and then
        carries it, so that each step linearizes the residual once, at its trial
        point (least-squares objectives).
      dense_products: ``dense_products(n, options)``, curvature products per step
        outside any CG loop (a dense ``n × n`` matrix counts ``n``; CG steps are
        read from the state).
    """

    name: str
    factory: Callable[..., optax.GradientTransformationExtraArgs]
    needs_structure: bool = False
    tests_trial: bool = False
    carries_values: bool = False
    carries_jacobian: bool = False
    dense_products: Callable[[int, dict[str, Any]], int] = lambda n, options: 0

    def __call__(self, n: int, **options) -> optax.GradientTransformationExtraArgs:
        return self.factory(n, **options)


def _subproblem(n: int, options: dict[str, Any]) -> str:
    sub = options.get("subproblem")
    return sub if sub is not None else ("exact" if n <= EXACT_SUBPROBLEM_MAX else "steihaug_cg")


def _trust_region(n, **options):
    return trust_region(**{**options, "subproblem": _subproblem(n, options)})


def _dense(n, options) -> int:
    return n if options.get("solver", "dense") == "dense" else 0


def _lm_products(n, options) -> int:
    # Dense Levenberg–Marquardt adds geodesic acceleration by default: one more
    # (second-order) Jacobian product per step.
    dense = options.get("solver", "dense") == "dense"
    return _dense(n, options) + int(bool(options.get("geodesic_acceleration", dense)))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("newton", lambda n, **o: newton(**o), dense_products=_dense),
        Method("newton_cg", lambda n, **o: newton(**{"solver": "cg", **o})),
        Method(
            "trust_region",
            _trust_region,
            tests_trial=True,
            carries_values=True,
            dense_products=lambda n, o: {"exact": n, "cauchy": 1}.get(_subproblem(n, o), 0),
        ),
        Method(
            "gauss_newton",
            lambda n, **o: gauss_newton(**o),
            needs_structure=True,
            dense_products=_dense,
        ),
        Method(
            "levenberg_marquardt",
            lambda n, **o: levenberg_marquardt(**o),
            needs_structure=True,
            tests_trial=True,
            carries_values=True,
            carries_jacobian=True,
            dense_products=_lm_products,
        ),
        Method("hessian_free", lambda n, **o: hessian_free(**o), tests_trial=True),
    )
}

#: The record of a user's optax transform: no structure, no trial, no carried values.
CUSTOM = Method("custom", lambda n, **o: None)


def resolve_method(fn_name, method, fun, n, options):
    """``(record, transform)`` for ``method``, with the errors a user can cause."""
    if isinstance(method, optax.GradientTransformation):
        if options:
            raise ValueError(f"{fn_name}: options apply to named methods, not to a transform")
        return CUSTOM, method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"{fn_name}: unknown method {method!r}; valid methods: "
            + ", ".join(repr(m) for m in METHODS)
            + ", or any optax.GradientTransformation"
        )
    record = METHODS[method]
    if record.needs_structure and not isinstance(fun, CompositeObjective):
        raise TypeError(
            f"{fn_name}: method {method!r} needs the objective's structure; pass "
            "nj.least_squares_objective(residual_fn) or "
            "nj.composite_objective(model_fn, output_loss_fn) as fun, or call "
            "nj.least_squares"
        )
    try:
        return record, record(n, **options)
    except TypeError as err:
        raise TypeError(f"{fn_name}: bad option for method {method!r}: {err}") from None
