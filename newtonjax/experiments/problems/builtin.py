"""Built-in experiment problems, registered by name.

Importing this module registers nine builders in
:data:`experiments.problems.base.PROBLEMS`:

========================  ====================================================  =========
name                      hyperparameters (defaults)                            key
========================  ====================================================  =========
``rosenbrock``            ``dim=2``                                             no
``quadratic``             none                                                  no
``saddle``                ``x0=0.3, y0=-0.2, quartic=0.0``                      no
``logistic_regression``   ``dataset="breast_cancer", l2=1e-2``                  no
``moons_logistic``        ``num_points=120, noise=0.25, degree=3,               yes
                          prior_precision=1.0``
``mlp_digits``            ``hidden=32, l2=1e-4``                                yes
``nist``                  ``dataset="Misra1a", start=1``                        no
``curve_fits``            ``num_fits=1000, num_points=40, noise=0.05,           yes
                          start_spread=0.2`` (a batch problem)
``mlp_spectrum``          ``hidden=32, l2=1e-4, num_eigenvalues=5,              yes
                          num_probes=3, lanczos_steps=40``
========================  ====================================================  =========

Conventions shared by every builder:

* Hyperparameters are keyword-only with defaults and plain ``int`` / ``float`` /
  ``str`` / ``bool`` annotations (the config validator reads the signature; this
  module deliberately does not use ``from __future__ import annotations``, so the
  annotations are real types). Structural values are checked at build time with a
  ``ValueError`` that names the builder, the argument and the valid choices.
* Random problems take a ``key`` argument (the run's PRNG key) and draw all their
  randomness from it.
* Parameters are created in ``jnp.result_type(float)`` (float32, or float64 when
  ``jax_enable_x64`` is on); objectives compute in the dtype of the parameters they
  are given and cast their data to it, so one problem runs in either precision.
* Objectives are pure, ``jit``- and ``vmap``-able, and carry their structure
  (:func:`newtonjax.least_squares_objective`, :func:`newtonjax.composite_objective`)
  wherever it exists, so Gauss–Newton, Levenberg–Marquardt and Hessian-free apply.
* Reports run on the host on the final parameters and return JSON-serializable
  Python values (floats, lists, strings, bools; a diverged run may give NaN/inf
  floats, which ``json.dumps`` writes as ``NaN`` / ``Infinity``).
* Data sets are offline: scikit-learn's bundled copies (no download) and the NIST
  StRD files shipped in ``experiments/data``.

Examples:
  >>> from newtonjax.experiments.problems.base import PROBLEMS
  >>> problem = PROBLEMS["rosenbrock"](dim=3)
  >>> print(problem.init_params)
  [-1.2  1.  -1.2]
  >>> round(float(problem.objective(problem.init_params)), 2)  # 24.2 + 100 * 2.2**2
  508.2
"""

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import newtonjax as nj
from newtonjax.experiments.problems import nist
from newtonjax.experiments.problems.base import Problem, StatisticalModel, register

__all__ = [
    "rosenbrock",
    "quadratic",
    "saddle",
    "logistic_regression",
    "moons_logistic",
    "two_moons",
    "polynomial_features",
    "mlp_digits",
    "nist_problem",
    "curve_fits",
    "mlp_spectrum",
    "LOGISTIC_DATASETS",
]

#: Data sets of :func:`logistic_regression`.
LOGISTIC_DATASETS: tuple[str, ...] = ("breast_cancer", "digits_binary")

#: Fixed seed of the curvature analysis in :func:`mlp_spectrum` (not the run's key:
#: every optimizer's final point is probed with the same vectors).
SPECTRUM_SEED = 0


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _float_dtype() -> Any:
    """float32, or float64 with ``jax_enable_x64``: the dtype of new parameters."""
    return jnp.result_type(float)


def _dtype_of(x: Any) -> Any:
    return jax.tree_util.tree_leaves(x)[0].dtype


def _check_int(fn: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")


def _check_nonnegative(fn: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{fn}: {name} must be a number >= 0, got {value!r}")


def _check_choice(fn: str, name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(
            f"{fn}: unknown {name} {value!r}; valid choices: " + ", ".join(map(repr, choices))
        )


def _to_host(x: Any) -> Any:
    """A JAX/NumPy scalar or array as a Python float or (nested) list of floats."""
    array = np.asarray(x, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


def _max_abs(tree: Any) -> jax.Array:
    return functools.reduce(
        jnp.maximum, [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree)]
    )


def _classifier(f: Callable) -> Callable[[Any], dict[str, Any]]:
    """Jitted :func:`newtonjax.critical_point_code` of ``f``, read back on the host.

    The same classification as :func:`newtonjax.classify_critical_point`, compiled
    once per problem instead of dispatched op by op.
    """
    classify = jax.jit(functools.partial(nj.critical_point_code, f))

    def run(x: Any) -> dict[str, Any]:
        point = classify(x)
        return {
            "kind": nj.CriticalPointKind(int(point.code)).name.lower(),
            "eigenvalues": _to_host(point.eigenvalues),
            "grad_norm": _to_host(point.grad_norm),
            "is_critical": bool(point.is_critical),
        }

    return run


def _classification_report(
    objective: Callable, accuracy: Callable[[Any], jax.Array]
) -> Callable[[Any], dict[str, Any]]:
    """Report of a classifier: loss, training accuracy and ‖∇f‖∞ (one compile)."""

    @jax.jit
    def stats(params):
        value, grad = jax.value_and_grad(objective)(params)
        return value, accuracy(params), _max_abs(grad)

    def report(params: Any) -> dict[str, Any]:
        value, acc, grad_norm = stats(params)
        return {
            "loss": _to_host(value),
            "accuracy": _to_host(acc),
            "grad_norm": _to_host(grad_norm),
            "num_params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params))),
        }

    return report


def _require_sklearn(fn: str) -> Any:
    try:
        import sklearn.datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{fn}: this problem needs scikit-learn's bundled data sets: "
            'pip install "newtonjax[experiments]"'
        ) from error
    return sklearn.datasets


def _standardize(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit (population) variance per column; constant columns stay 0."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return (features - mean) / np.where(std > 0.0, std, 1.0)


def _frozen(array: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    array = np.array(array, dtype=dtype)
    array.setflags(write=False)
    return array


@functools.cache
def _classification_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardized features (float64) and integer labels of a bundled data set."""
    datasets = _require_sklearn("newtonjax.experiments.problems.builtin")
    if name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        labels = bunch.target
    elif name in ("digits", "digits_binary"):
        bunch = datasets.load_digits()
        # digits_binary: "is the digit 5 or larger" — both halves mix similar shapes,
        # so the two classes are not linearly separable.
        labels = bunch.target if name == "digits" else (bunch.target >= 5)
    else:  # pragma: no cover - guarded by the callers
        raise ValueError(name)
    return _frozen(_standardize(bunch.data)), _frozen(labels, np.int32)


def _safe_label(label: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_") or "run"


# ---------------------------------------------------------------------------
# Rosenbrock, quadratic, saddle.
# ---------------------------------------------------------------------------


@register("rosenbrock")
def rosenbrock(*, dim: int = 2) -> Problem:
    """The ``dim``-dimensional (chained) Rosenbrock function, as least squares.

    .. math::

        f(x) = \\sum_{i=1}^{n-1} 100\\,(x_{i+1} - x_i^2)^2 + (1 - x_i)^2
             = \\tfrac12 \\lVert r(x) \\rVert^2,
        \\quad r = \\sqrt2\\,\\bigl(10(x_{i+1} - x_i^2),\\; 1 - x_i\\bigr)_{i=1}^{n-1},

    the same function as ``scipy.optimize.rosen``, started from the classical point
    ``(-1.2, 1, -1.2, 1, ...)``. The curved, narrow valley shows why steepest descent
    crawls and Newton-type steps do not; the residual form lets Gauss–Newton and
    Levenberg–Marquardt run on it too. The global minimizer is ``(1, ..., 1)`` with
    ``f = 0``; for ``4 <= dim <= 7`` there is a second local minimizer near
    ``(-1, 1, ..., 1)`` (Shang & Qiu 2006), so a solver may legitimately stop at a
    distance of about 2 from ``(1, ..., 1)``.

    Args:
      dim: number of variables ``n >= 2``.

    Returns:
      A :class:`Problem` with a least-squares objective, ``target_loss=1e-10``,
      a ``distance_to_minimizer`` metric and a report with the final value and the
      distance to ``(1, ..., 1)``.

    References:
      Rosenbrock (1960), The Computer Journal 3(3), 175-184;
      Moré, Garbow & Hillstrom (1981), ACM TOMS 7(1), 17-41, problems (1) and (21);
      Shang & Qiu (2006), Evolutionary Computation 14(1), 119-126.

    Examples:
      >>> problem = rosenbrock()
      >>> round(float(problem.objective(problem.init_params)), 4)  # 100 * 0.44**2 + 2.2**2
      24.2
    """
    fn = "rosenbrock"
    _check_int(fn, "dim", dim, 2)
    start = np.where(np.arange(dim) % 2 == 0, -1.2, 1.0)
    init = jnp.asarray(start, dtype=_float_dtype())

    def rosenbrock_residual(x: jax.Array) -> jax.Array:
        scale = math.sqrt(2.0)
        valley = 10.0 * (x[1:] - x[:-1] ** 2)
        return scale * jnp.concatenate([valley, 1.0 - x[:-1]])

    objective = nj.least_squares_objective(rosenbrock_residual)

    def metrics(x: jax.Array) -> dict[str, jax.Array]:
        return {"distance_to_minimizer": jnp.linalg.norm(x - 1.0)}

    def report(x: Any) -> dict[str, Any]:
        x = jnp.asarray(x)
        return {
            "value": _to_host(objective(x)),
            "distance_to_minimizer": _to_host(jnp.linalg.norm(x - 1.0)),
            "final_params": _to_host(x) if dim <= 20 else None,
        }

    return Problem(
        name=f"rosenbrock{dim}",
        objective=objective,
        init_params=init,
        metrics=metrics,
        report=report,
        target_loss=1e-10,
        description=f"{dim}-D Rosenbrock function from (-1.2, 1, ...); minimum 0 at (1, ..., 1)",
    )


@register("quadratic")
def quadratic() -> Problem:
    """The seed example: ``f(w) = ‖w − (1, 2, 3)‖²`` from ``w = 0``.

    A strictly convex quadratic with Hessian ``2I``: one Newton step
    ``w − H⁻¹∇f(w)`` lands on the minimizer ``(1, 2, 3)`` from any start, and so
    does one Gauss–Newton step on the residual form ``r(w) = √2 (w − c)``
    (``f = ½‖r‖²``), which is how the objective is built. A first sanity check for
    every method (Nocedal & Wright 2006, §2.2 and §3.3).

    Returns:
      A :class:`Problem` with a least-squares objective, ``target_loss=1e-12`` and a
      report with the final parameters, their distance to ``(1, 2, 3)`` and the
      critical-point class (``"minimum"``) there.

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., §3.3 (Newton's
      method converges in one step on a quadratic with positive definite Hessian).

    Examples:
      >>> problem = quadratic()
      >>> round(float(problem.objective(problem.init_params)), 4)  # 1 + 4 + 9
      14.0
    """
    center = np.array([1.0, 2.0, 3.0])

    def quadratic_residual(w: jax.Array) -> jax.Array:
        return math.sqrt(2.0) * (w - jnp.asarray(center, w.dtype))

    objective = nj.least_squares_objective(quadratic_residual)

    classify = _classifier(objective)

    def report(w: Any) -> dict[str, Any]:
        w = jnp.asarray(w)
        point = classify(w)
        return {
            "final_params": _to_host(w),
            "distance_to_minimizer": float(np.linalg.norm(np.asarray(w, np.float64) - center)),
            "critical_point": point["kind"],
            "is_critical": point["is_critical"],
        }

    return Problem(
        name="quadratic",
        objective=objective,
        init_params=jnp.zeros(3, dtype=_float_dtype()),
        report=report,
        target_loss=1e-12,
        description="||w - (1, 2, 3)||^2 from w = 0; one Newton step solves it",
    )


@register("saddle")
def saddle(*, x0: float = 0.3, y0: float = -0.2, quartic: float = 0.0) -> Problem:
    """A saddle point: ``f(x, y) = x² + xy − y² + quartic·(x⁴ + y⁴)``.

    The Hessian at the origin is ``[[2, 1], [1, −2]]`` with eigenvalues ``±√5``: the
    origin is a strict saddle, the only stationary point when ``quartic = 0``. The
    pure, unmodified Newton step ``−H⁻¹∇f`` jumps onto it in one step from any start
    (it seeks any stationary point); Newton with a Hessian modification (newtonjax's
    default), saddle-free Newton (``|H|`` instead of ``H``) and trust regions move
    away along the negative-curvature direction. With ``quartic = 0`` the function is unbounded
    below along that direction, so a method that escapes keeps decreasing ``f``
    without limit (the run ends at ``maxiter`` or overflows); a small
    ``quartic > 0`` (e.g. 0.1) makes ``f`` coercive, with two minima for the
    escaping methods to reach.

    Args:
      x0: starting ``x``.
      y0: starting ``y``.
      quartic: coefficient ``>= 0`` of ``x⁴ + y⁴``.

    Returns:
      A :class:`Problem` with a plain objective on ``params = (x, y)`` (an array of
      shape ``(2,)``; the Hessian is indefinite, so there is no Gauss–Newton
      structure) and a report classifying the origin and the final point with
      :func:`newtonjax.classify_critical_point` (kind, eigenvalues, ‖∇f‖∞).

    References:
      Nocedal & Wright (2006), §2.1 (second-order conditions), §3.4 (Newton with
      Hessian modification); Dauphin et al. (2014), NeurIPS, "Identifying and
      attacking the saddle point problem in high-dimensional non-convex
      optimization" (saddle-free Newton).

    Examples:
      >>> problem = saddle()
      >>> problem.report(problem.init_params)["origin"]["kind"]
      'saddle'
    """
    fn = "saddle"
    _check_nonnegative(fn, "quartic", quartic)
    for name, value in (("x0", x0), ("y0", y0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{fn}: {name} must be a number, got {value!r}")

    def saddle_objective(p: jax.Array) -> jax.Array:
        x, y = p[0], p[1]
        return x**2 + x * y - y**2 + quartic * (x**4 + y**4)

    classifier = _classifier(saddle_objective)

    def classify(p: jax.Array) -> dict[str, Any]:
        return {"point": _to_host(p), "value": _to_host(saddle_objective(p)), **classifier(p)}

    def report(p: Any) -> dict[str, Any]:
        p = jnp.asarray(p)
        return {"origin": classify(jnp.zeros_like(p)), "final": classify(p)}

    description = "x^2 + xy - y^2" + (f" + {quartic}(x^4 + y^4)" if quartic else "")
    description += "; strict saddle at the origin"
    if not quartic:
        description += " (unbounded below)"
    return Problem(
        name="saddle",
        objective=saddle_objective,
        init_params=jnp.asarray([x0, y0], dtype=_float_dtype()),
        report=report,
        description=description,
    )


# ---------------------------------------------------------------------------
# Classification: logistic regression and an MLP, as composite objectives.
# ---------------------------------------------------------------------------


@register("logistic_regression")
def logistic_regression(*, dataset: str = "breast_cancer", l2: float = 1e-2) -> Problem:
    """L2-regularized logistic regression on a bundled scikit-learn data set.

    With standardized features ``X`` (n × d), labels ``y ∈ {0, 1}`` and logits
    ``z = Xw + b``:

    .. math::

        f(w, b) = \\frac1n \\sum_i \\bigl(\\operatorname{softplus}(z_i) - y_i z_i\\bigr)
                  + \\frac{\\lambda}{2} \\lVert w \\rVert^2,

    the mean binary cross-entropy plus a ridge penalty (the bias is not penalized).
    It is built as a composite objective ``ℓ(m(θ))`` whose model returns
    ``{"logits": z, "reg": √λ·w}`` and whose output loss is the mean cross-entropy
    of ``logits`` plus ``½‖reg‖²``; the loss Hessian in the outputs is positive
    semi-definite, and because the model is linear in ``θ`` the generalized
    Gauss–Newton matrix equals the Hessian (Schraudolph 2002), so Gauss–Newton is
    Newton here. Strictly convex for ``λ > 0``.

    Data sets (offline, scikit-learn's bundled copies, standardized):
    ``"breast_cancer"`` (569 × 30, malignant vs benign) and ``"digits_binary"``
    (1797 × 64 handwritten digits, label "digit ≥ 5").

    Args:
      dataset: ``"breast_cancer"`` or ``"digits_binary"``.
      l2: ridge coefficient ``λ >= 0``.

    Returns:
      A :class:`Problem` with params ``{"w": (d,), "b": ()}`` starting at zero (where
      ``f = log 2``), a training ``accuracy`` metric and a report with the final
      loss, accuracy and ‖∇f‖∞.

    References:
      Hastie, Tibshirani & Friedman (2009), The Elements of Statistical Learning,
      2nd ed., §4.4 (logistic regression, Newton/IRLS); Schraudolph (2002), Neural
      Computation 14(7) (generalized Gauss–Newton); Wolberg et al. (1995) (breast
      cancer data); Alpaydin & Kaynak (1998) (optical digits).
    """
    fn = "logistic_regression"
    _check_choice(fn, "dataset", dataset, LOGISTIC_DATASETS)
    _check_nonnegative(fn, "l2", l2)
    _require_sklearn(fn)
    features, labels = _classification_data(dataset)
    reg_scale = math.sqrt(l2)

    def logistic_model(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
        w = params["w"]
        logits = jnp.asarray(features, w.dtype) @ w + params["b"]
        return {"logits": logits, "reg": reg_scale * w}

    def logistic_loss(outputs: dict[str, jax.Array]) -> jax.Array:
        z = outputs["logits"]
        y = jnp.asarray(labels, z.dtype)
        cross_entropy = jnp.mean(jax.nn.softplus(z) - y * z)
        return cross_entropy + 0.5 * jnp.sum(outputs["reg"] ** 2)

    objective = nj.composite_objective(logistic_model, logistic_loss)

    def accuracy(params: dict[str, jax.Array]) -> jax.Array:
        logits = logistic_model(params)["logits"]
        correct = (logits > 0) == (jnp.asarray(labels) == 1)
        return jnp.mean(correct.astype(logits.dtype))

    def metrics(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"accuracy": accuracy(params)}

    base_report = _classification_report(objective, accuracy)

    def report(params: Any) -> dict[str, Any]:
        return {
            **base_report(params),
            "num_samples": int(features.shape[0]),
            "num_features": int(features.shape[1]),
        }

    dtype = _float_dtype()
    init = {"w": jnp.zeros(features.shape[1], dtype), "b": jnp.zeros((), dtype)}
    return Problem(
        name=f"logistic_regression_{dataset}",
        objective=objective,
        init_params=init,
        metrics=metrics,
        report=report,
        description=(
            f"L2-regularized logistic regression on {dataset} "
            f"({features.shape[0]} x {features.shape[1]}), l2={l2}"
        ),
    )


def two_moons(key: jax.Array, num_points: int, noise: float | jax.Array, dtype: Any = None):
    """Two interleaved half circles with Gaussian noise: points ``(m, 2)``, labels 0/1.

    Even rows are on the upper half circle ``(cos a, sin a)`` (label 0), odd rows on
    the lower one ``(1 − cos a, ½ − sin a)`` (label 1), with ``a ~ U(0, π)`` and
    isotropic noise of standard deviation ``noise``; all randomness from ``key``.
    """
    dtype = _float_dtype() if dtype is None else dtype
    return _two_moons(key, num_points, dtype, noise)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _two_moons(key, num_points, dtype, noise):
    key_angle, key_noise = jax.random.split(key)
    angle = jax.random.uniform(key_angle, (num_points,), dtype) * jnp.pi
    label = (jnp.arange(num_points) % 2).astype(dtype)
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(angle), 0.5 - jnp.sin(angle)], axis=1)
    points = jnp.where(label[:, None] == 0, upper, lower)
    return points + noise * jax.random.normal(key_noise, points.shape, dtype), label


def polynomial_features(points: jax.Array, degree: int) -> jax.Array:
    """All monomials ``u^i v^j``, ``i + j <= degree``, of centred 2-D points.

    The points are first shifted and scaled to ``u = x₁ − ½``, ``v = (x₂ − ¼)/0.6``
    (the moons' centre and spread), so the monomials stay of order one; ``(m, 2) ->
    (m, (degree + 1)(degree + 2)/2)``, the constant column first.
    """
    points = jnp.asarray(points)
    u = points[:, 0] - 0.5
    v = (points[:, 1] - 0.25) / 0.6
    columns = [u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return jnp.stack(columns, axis=1)


@register("moons_logistic")
def moons_logistic(
    *,
    key: jax.Array,
    num_points: int = 120,
    noise: float = 0.25,
    degree: int = 3,
    prior_precision: float = 1.0,
) -> Problem:
    """Bayesian logistic regression on two interleaved moons, a polynomial classifier.

    Labels ``t ∈ {0, 1}`` of 2-D points ``x`` (:func:`two_moons`), logits
    ``z = φ(x)ᵀ w`` with the monomials ``φ`` of :func:`polynomial_features`, and an
    isotropic Gaussian prior ``w ~ N(0, δ⁻¹ I)``. The objective is the negative log
    joint (up to constants)

    .. math::

        f(w) = \\sum_i \\bigl(\\operatorname{softplus}(z_i) - t_i z_i\\bigr)
               + \\frac{δ}{2} \\lVert w \\rVert^2,

    a summed (not averaged) cross-entropy, so that the Laplace evidence is that of
    the data set. Built as a composite objective (model → ``{"logits", "prior"}``,
    output loss → cross-entropy + ``½‖prior‖²``), so the GGN ``Φᵀ diag(p(1 − p)) Φ
    + δI`` applies; the model is linear in ``w``, so the GGN is the Hessian. The
    :class:`~experiments.problems.base.StatisticalModel` separates the likelihood
    from the prior, which is what tuning δ by the evidence (MacKay 1992 §4) and
    the linearized predictive over the plane need.

    Args:
      key: PRNG key of the run; the data are its only randomness.
      num_points: number of points (``>= 4``), alternating between the two moons.
      noise: standard deviation of the Gaussian noise on the points (``>= 0``).
      degree: total degree of the polynomial features (``>= 1``; 3 gives 10 weights).
      prior_precision: δ >= 0 of the prior inside the objective.

    Returns:
      A :class:`Problem` with params ``w`` of shape ``((degree + 1)(degree + 2)/2,)``
      starting at zero, a training ``accuracy`` metric, a report with the final loss,
      accuracy and ‖∇f‖∞, and a Bernoulli statistical model whose figures cover
      ``[−1.8, 2.8] × [−1.4, 1.9]``.

    References:
      MacKay (1992), "The evidence framework applied to classification networks",
      Neural Computation 4(5), §2–3; Bishop (2006), Pattern Recognition and Machine
      Learning, §4.5 (Bayesian logistic regression, the Laplace approximation).
    """
    fn = "moons_logistic"
    _check_int(fn, "num_points", num_points, 4)
    _check_nonnegative(fn, "noise", noise)
    _check_int(fn, "degree", degree, 1)
    _check_nonnegative(fn, "prior_precision", prior_precision)
    points, labels = two_moons(key, num_points, noise)
    points, labels = _frozen(points), _frozen(labels)
    # The data's features once (jitted: a dozen small ops), not at every evaluation.
    phi = _frozen(jax.jit(polynomial_features, static_argnums=1)(points, degree))
    prior_scale = math.sqrt(prior_precision)

    def logits(w: jax.Array, inputs: Any) -> jax.Array:
        return polynomial_features(jnp.asarray(inputs, w.dtype), degree) @ w

    def data_logits(w: jax.Array) -> jax.Array:
        return jnp.asarray(phi, w.dtype) @ w

    def cross_entropy(z: jax.Array) -> jax.Array:
        t = jnp.asarray(labels, z.dtype)
        return jnp.sum(jax.nn.softplus(z) - t * z)

    nll = nj.composite_objective(data_logits, cross_entropy)

    def joint_model(w: jax.Array) -> dict[str, jax.Array]:
        return {"logits": data_logits(w), "prior": prior_scale * w}

    def joint_loss(outputs: dict[str, jax.Array]) -> jax.Array:
        return cross_entropy(outputs["logits"]) + 0.5 * jnp.sum(outputs["prior"] ** 2)

    objective = nj.composite_objective(joint_model, joint_loss)

    def accuracy(w: jax.Array) -> jax.Array:
        correct = (data_logits(w) > 0) == (jnp.asarray(labels) == 1)
        return jnp.mean(correct.astype(w.dtype))

    def metrics(w: jax.Array) -> dict[str, jax.Array]:
        return {"accuracy": accuracy(w)}

    num_weights = (degree + 1) * (degree + 2) // 2
    statistical_model = StatisticalModel(
        model_fn=logits,
        inputs=points,
        targets=labels,
        likelihood="bernoulli",
        negative_log_likelihood=nll,
        prior_precision=float(prior_precision),
        plot_inputs=(_frozen(np.linspace(-1.8, 2.8, 120)), _frozen(np.linspace(-1.4, 1.9, 100))),
    )
    return Problem(
        name=f"moons_logistic_deg{degree}",
        objective=objective,
        init_params=jnp.zeros(num_weights, _float_dtype()),
        metrics=metrics,
        report=_classification_report(objective, accuracy),
        description=(
            f"Bayesian logistic regression on two moons ({num_points} points, noise {noise}), "
            f"degree-{degree} polynomial features ({num_weights} weights), prior precision "
            f"{prior_precision}"
        ),
        statistical_model=statistical_model,
    )


def _glorot(key: jax.Array, fan_in: int, fan_out: int, dtype: Any) -> jax.Array:
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return std * jax.random.normal(key, (fan_in, fan_out), dtype)


# Jitted at module level so that rebuilding a problem (sweeps, tests) reuses the
# compiled initializer: one compile instead of one per random op and build.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _mlp_init(key: jax.Array, sizes: tuple[int, int, int], dtype: Any) -> dict[str, jax.Array]:
    num_in, hidden, num_out = sizes
    key1, key2 = jax.random.split(key)
    return {
        "W1": _glorot(key1, num_in, hidden, dtype),
        "b1": jnp.zeros(hidden, dtype),
        "W2": _glorot(key2, hidden, num_out, dtype),
        "b2": jnp.zeros(num_out, dtype),
    }


@register("mlp_digits")
def mlp_digits(*, key: jax.Array, hidden: int = 32, l2: float = 1e-4) -> Problem:
    """A one-hidden-layer tanh MLP classifying scikit-learn's 8×8 digits.

    ``64 → hidden (tanh) → 10`` on the 1797 standardized images, full batch, with
    the mean softmax cross-entropy plus a ridge penalty on the weights:

    .. math::

        f(θ) = \\frac1n \\sum_i \\Bigl(\\operatorname{logsumexp}(z_i) - z_{i, y_i}\\Bigr)
               + \\frac{\\lambda}{2} \\bigl(\\lVert W_1\\rVert^2 + \\lVert W_2\\rVert^2\\bigr),
        \\quad z_i = W_2^\\top \\tanh(W_1^\\top x_i + b_1) + b_2.

    Built as a composite objective (model → ``{"logits", "reg"}``, output loss →
    cross-entropy + ``½‖reg‖²``) so that Gauss–Newton and Hessian-free use the
    generalized Gauss–Newton matrix, which is positive semi-definite even where the
    Hessian of this non-convex objective is not. A small but genuine neural-network
    training problem: the classic setting of Hessian-free optimization.

    Args:
      key: PRNG key of the run; the initialization is its only randomness.
      hidden: width of the hidden layer (``>= 1``).
      l2: ridge coefficient ``λ >= 0`` on ``W1`` and ``W2`` (biases unpenalized).

    Returns:
      A :class:`Problem` with params ``{"W1": (64, h), "b1": (h,), "W2": (h, 10),
      "b2": (10,)}`` (Glorot-normal weights, zero biases), a training ``accuracy``
      metric and a report with the final loss, accuracy and ‖∇f‖∞.

    References:
      Glorot & Bengio (2010), AISTATS, §4.2 (initialization); Martens (2010), ICML
      (Hessian-free optimization); Schraudolph (2002) (generalized Gauss–Newton);
      Alpaydin & Kaynak (1998) (optical digits, as bundled by scikit-learn).
    """
    fn = "mlp_digits"
    _check_int(fn, "hidden", hidden, 1)
    _check_nonnegative(fn, "l2", l2)
    _require_sklearn(fn)
    features, labels = _classification_data("digits")
    num_in, num_classes = features.shape[1], 10
    reg_scale = math.sqrt(l2)

    def mlp_model(params: dict[str, jax.Array]) -> dict[str, Any]:
        dtype = params["W1"].dtype
        x = jnp.asarray(features, dtype)
        h = jnp.tanh(x @ params["W1"] + params["b1"])
        logits = h @ params["W2"] + params["b2"]
        reg = {"W1": reg_scale * params["W1"], "W2": reg_scale * params["W2"]}
        return {"logits": logits, "reg": reg}

    def softmax_cross_entropy(outputs: dict[str, Any]) -> jax.Array:
        z = outputs["logits"]
        picked = jnp.take_along_axis(z, jnp.asarray(labels)[:, None], axis=1)[:, 0]
        cross_entropy = jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)
        penalty = sum(jnp.sum(r**2) for r in jax.tree_util.tree_leaves(outputs["reg"]))
        return cross_entropy + 0.5 * penalty

    objective = nj.composite_objective(mlp_model, softmax_cross_entropy)

    def accuracy(params: dict[str, jax.Array]) -> jax.Array:
        logits = mlp_model(params)["logits"]
        correct = jnp.argmax(logits, axis=1) == jnp.asarray(labels)
        return jnp.mean(correct.astype(logits.dtype))

    def metrics(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"accuracy": accuracy(params)}

    report = _classification_report(objective, accuracy)

    dtype = _float_dtype()
    init = _mlp_init(key, (num_in, hidden, num_classes), dtype)
    return Problem(
        name=f"mlp_digits_h{hidden}",
        objective=objective,
        init_params=init,
        metrics=metrics,
        report=report,
        description=f"tanh MLP 64-{hidden}-10 on sklearn digits (1797 images), l2={l2}",
    )


# ---------------------------------------------------------------------------
# Nonlinear least squares: NIST StRD and a batch of small curve fits.
# ---------------------------------------------------------------------------


@register("nist")
def nist_problem(*, dataset: str = "Misra1a", start: int = 1) -> Problem:
    """One NIST StRD nonlinear regression problem, as least squares.

    ``f(b) = ½‖r(b)‖²`` with ``r_i = model(b, x_i) − y_i``
    (:attr:`experiments.problems.nist.NistProblem.residual_fn`), started from the
    file's first or second starting point. NIST's certified residual sum of
    squares is ``Σ r_i² = 2 f``; the certified parameters carry 11 significant
    digits, and accuracy is scored by the log relative error (LRE, McCullough 1998):
    the number of correct digits per parameter. The "higher difficulty" problems
    (MGH09, MGH10, Eckerle4, ...) from start 1 are where plain Gauss–Newton fails
    and damping / trust regions earn their keep.

    Args:
      dataset: a NIST StRD name (case-insensitive), see
        :func:`experiments.problems.nist.names`.
      start: 1 or 2, the starting point (start 1 is the farther one).

    Returns:
      A :class:`Problem` with a least-squares objective on a parameter vector,
      ``target_loss`` at the certified optimum (``½ RSS·(1 + 1e-6)``) and a report
      with the fitted and certified parameters, the LRE of each, the fitted and
      certified RSS (``Σr²``) and the LRE of the RSS. Its
      :class:`~experiments.problems.base.StatisticalModel` (Gaussian, the objective
      as negative log likelihood with unit noise variance, the file's model as mean
      response, a curve 25% past the last point for one-predictor data sets) is what
      a config's ``uncertainty:`` section reads.

    Raises:
      ValueError: for an unknown data set or a start other than 1 or 2; the message
        lists the valid choices.

    References:
      NIST StRD Nonlinear Regression,
      https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml;
      McCullough (1998), The American Statistician 52(4), §2 (LRE).

    Examples:
      >>> problem = nist_problem(dataset="misra1a", start=2)
      >>> problem.name, problem.init_params.shape
      ('nist_Misra1a_start2', (2,))
      >>> problem.report(problem.init_params)["certified_rss"]
      0.12455138894
    """
    fn = "nist"
    valid = nist.names()
    canonical = {name.lower(): name for name in valid}.get(str(dataset).lower())
    if canonical is None:
        raise ValueError(f"{fn}: unknown dataset {dataset!r}; valid choices: " + ", ".join(valid))
    if isinstance(start, bool) or start not in (1, 2):
        raise ValueError(f"{fn}: start must be 1 or 2 (valid choices: 1, 2), got {start!r}")
    data = nist.load(canonical)
    objective = nj.least_squares_objective(data.residual_fn)
    digits = data.certified_digits

    def report(params: Any) -> dict[str, Any]:
        params = jnp.asarray(params)
        fitted = np.asarray(params, dtype=np.float64)
        rss = float(data.rss(params))
        lre = nist.log_relative_error(fitted, data.certified_params, digits)
        return {
            "dataset": data.name,
            "difficulty": data.difficulty,
            "start": start,
            "fitted_params": fitted.tolist(),
            "certified_params": data.certified_params.tolist(),
            "lre": lre.tolist(),
            "min_lre": float(np.min(lre)),
            "rss": rss,
            "certified_rss": float(data.certified_rss),
            "rss_lre": float(nist.log_relative_error(rss, data.certified_rss, digits)),
            "note": "rss = sum(r**2) = 2 * objective (the objective is 0.5*||r||^2)",
        }

    def mean_response(b: jax.Array, inputs: Any) -> jax.Array:
        return data.model(b, jnp.asarray(inputs, b.dtype))

    plot_inputs = None
    if data.x.ndim == 1:  # one predictor: draw the curve 25% past the last point
        low, high = float(np.min(data.x)), float(np.max(data.x))
        plot_inputs = _frozen(np.linspace(low, high + 0.25 * (high - low), 400))
    statistical_model = StatisticalModel(
        model_fn=mean_response,
        inputs=data.x,
        targets=data.y,
        likelihood="gaussian",
        negative_log_likelihood=objective,
        plot_inputs=plot_inputs,
    )

    return Problem(
        name=f"nist_{data.name}_start{start}",
        objective=objective,
        init_params=jnp.asarray(data.starts[start - 1], dtype=_float_dtype()),
        report=report,
        statistical_model=statistical_model,
        target_loss=0.5 * data.certified_rss * (1.0 + 1e-6),
        description=(
            f"NIST StRD {data.name} ({data.difficulty} difficulty, {data.num_params} "
            f"parameters, {data.num_observations} observations), start {start}"
        ),
    )


def _decay_oscillation(theta: jax.Array, t: jax.Array) -> jax.Array:
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]
    return a * jnp.exp(-b * t) + c * jnp.sin(d * t)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _curve_fit_data(
    key: jax.Array,
    num_fits: int,
    num_points: int,
    dtype: Any,
    noise: float | jax.Array,
    start_spread: float | jax.Array,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """True parameters, starts and data of :func:`curve_fits` (jitted once per shape)."""
    key_true, key_noise, key_start = jax.random.split(key, 3)
    low = jnp.asarray([0.5, 0.3, 0.3, 1.0], dtype)
    high = jnp.asarray([2.0, 1.5, 1.0, 3.0], dtype)
    true_params = jax.random.uniform(key_true, (num_fits, 4), dtype, low, high)
    t = jnp.linspace(0.0, 4.0, num_points, dtype=dtype)
    clean = jax.vmap(_decay_oscillation, in_axes=(0, None))(true_params, t)
    y = clean + noise * jax.random.normal(key_noise, clean.shape, dtype)
    factors = jax.random.uniform(
        key_start, (num_fits, 4), dtype, 1.0 - start_spread, 1.0 + start_spread
    )
    data = {"t": jnp.broadcast_to(t, (num_fits, num_points)), "y": y}
    return true_params, true_params * factors, data


@register("curve_fits")
def curve_fits(
    *,
    key: jax.Array,
    num_fits: int = 1000,
    num_points: int = 40,
    noise: float = 0.05,
    start_spread: float = 0.2,
) -> Problem:
    """A batch of small nonlinear curve fits, solved side by side under ``vmap``.

    Each instance fits ``y(t) = a·exp(−b t) + c·sin(d t)`` to ``num_points`` noisy
    samples on ``t ∈ [0, 4]``:

    .. math::

        \\min_θ \\; \\tfrac12 \\sum_j \\bigl(a e^{-b t_j} + c \\sin(d t_j) - y_j\\bigr)^2,
        \\quad θ = (a, b, c, d).

    True parameters are drawn uniformly from ``a ∈ [0.5, 2]``, ``b ∈ [0.3, 1.5]``,
    ``c ∈ [0.3, 1]``, ``d ∈ [1, 3]``; the data get Gaussian noise of standard
    deviation ``noise``; each start is the truth times ``1 + U(−s, s)`` per
    parameter (``s = start_spread``) — near enough that the nearest minimum is
    usually the right one (the frequency ``d`` makes the problem multimodal). The
    point: thousands of independent 4-parameter problems, one jitted ``vmap``.

    The data enter through :attr:`Problem.data`: the objective is called as
    ``objective(theta, data)`` with ``data = {"t": (num_points,), "y":
    (num_points,)}`` for one instance; ``Problem.init_params`` has shape
    ``(num_fits, 4)`` and every leaf of ``Problem.data`` a leading axis of size
    ``num_fits``.

    Args:
      key: PRNG key of the run; true parameters, noise and starts all come from it.
      num_fits: number of instances (``batch_size``).
      num_points: samples per curve (``>= 4``).
      noise: standard deviation of the additive noise (``>= 0``).
      start_spread: relative half-width of the start perturbation (``>= 0``).

    Returns:
      A batch :class:`Problem` with a least-squares objective. Its report takes the
      *batch* of final parameters (shape ``(num_fits, 4)``) and gives the median
      and maximum final loss, the fraction of fits with ``‖∇f‖∞ < 1e-6`` (reachable
      in float64 only), the median gradient norm, and the median relative error of
      the fitted parameters against the true ones (the noise alone makes that
      nonzero).

    References:
      Nocedal & Wright (2006), Chapter 10 (nonlinear least squares); Bates & Watts
      (1988), Nonlinear Regression Analysis and Its Applications, §2.1.
    """
    fn = "curve_fits"
    _check_int(fn, "num_fits", num_fits, 1)
    _check_int(fn, "num_points", num_points, 4)
    _check_nonnegative(fn, "noise", noise)
    _check_nonnegative(fn, "start_spread", start_spread)
    true_params, init, data = _curve_fit_data(
        key, num_fits, num_points, _float_dtype(), noise, start_spread
    )

    def curve_residual(theta: jax.Array, data: dict[str, jax.Array]) -> jax.Array:
        t = jnp.asarray(data["t"], theta.dtype)
        return _decay_oscillation(theta, t) - jnp.asarray(data["y"], theta.dtype)

    objective = nj.least_squares_objective(curve_residual)
    grad_threshold = 1e-6

    @jax.jit
    def _batch_stats(thetas, data):
        losses = jax.vmap(objective)(thetas, data)
        grads = jax.vmap(jax.grad(objective))(thetas, data)
        return losses, jnp.max(jnp.abs(grads), axis=1)

    def report(params: Any) -> dict[str, Any]:
        thetas = jnp.asarray(params)
        if thetas.shape != (num_fits, 4):
            raise ValueError(
                f"{fn}: report expects the batch of final params, shape {(num_fits, 4)}, "
                f"got {thetas.shape}"
            )
        cast = jax.tree_util.tree_map(lambda a: a.astype(thetas.dtype), data)
        losses, grad_norms = (np.asarray(a, np.float64) for a in _batch_stats(thetas, cast))
        fitted = np.asarray(thetas, np.float64)
        truth = np.asarray(true_params, np.float64)
        rel_error = np.max(np.abs(fitted - truth) / np.abs(truth), axis=1)
        return {
            "num_fits": num_fits,
            "median_loss": float(np.median(losses)),
            "max_loss": float(np.max(losses)),
            "expected_noise_loss": 0.5 * num_points * noise**2,
            "fraction_converged": float(np.mean(grad_norms < grad_threshold)),
            "grad_norm_threshold": grad_threshold,
            "median_grad_norm": float(np.median(grad_norms)),
            "median_param_rel_error": float(np.median(rel_error)),
            "fraction_nonfinite": float(np.mean(~np.isfinite(losses))),
        }

    return Problem(
        name="curve_fits",
        objective=objective,
        init_params=init,
        batch_size=num_fits,
        report=report,
        data=data,
        description=(
            f"{num_fits} fits of a*exp(-b t) + c*sin(d t) to {num_points} points, noise {noise}"
        ),
    )


# ---------------------------------------------------------------------------
# Hessian spectrum of the MLP.
# ---------------------------------------------------------------------------


def _spectrum_lanczos_steps(
    fn: str, init_params: Any, num_eigenvalues: int, lanczos_steps: int
) -> int:
    """Lanczos steps of :func:`mlp_spectrum`: at least ``num_eigenvalues``, at most the
    number of parameters (which ``num_eigenvalues`` may not exceed)."""
    num_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(init_params))
    if num_eigenvalues > num_params:
        raise ValueError(
            f"{fn}: num_eigenvalues must be <= the number of parameters ({num_params}), "
            f"got {num_eigenvalues}"
        )
    return min(num_params, max(lanczos_steps, num_eigenvalues))


def _spectrum_analysis(
    objective: Any, num_eigenvalues: int, steps: int, trace_samples: int
) -> Callable[[Any], tuple[jax.Array, jax.Array, jax.Array]]:
    """Jitted ``params -> (top eigenvalues, smallest eigenvalue, trace estimate)`` of
    the Hessian of ``objective``, probed from the fixed key :data:`SPECTRUM_SEED`."""

    @jax.jit
    def analyze(params):
        key_top, key_bottom, key_trace = jax.random.split(jax.random.PRNGKey(SPECTRUM_SEED), 3)
        top = nj.hessian_eigenvalues(
            objective, params, k=num_eigenvalues, key=key_top, num_steps=steps
        )
        bottom = nj.hessian_eigenvalues(
            objective, params, k=1, which="smallest", key=key_bottom, num_steps=steps
        )
        trace = nj.hessian_trace(objective, params, key=key_trace, num_samples=trace_samples)
        return top, bottom[0], trace

    return analyze


def _spectral_density_plot(
    fn: str, objective: Any, num_probes: int, steps: int
) -> Callable[[dict[str, Any], Any], list[str]]:
    """The plot hook of :func:`mlp_spectrum`: per label, the stochastic Lanczos
    quadrature density at its final params (jitted once, probed from the fixed key
    :data:`SPECTRUM_SEED`) into ``spectral_density_<label>.png``."""

    @jax.jit
    def density(params):
        return nj.hessian_spectral_density(
            objective,
            params,
            key=jax.random.PRNGKey(SPECTRUM_SEED),
            num_probes=num_probes,
            num_steps=steps,
            num_points=500,
        )

    def plot(results: dict[str, Any], run_dir: Any) -> list[str]:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                f'{fn}: plotting needs matplotlib: pip install "newtonjax[experiments]"'
            ) from error
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for label, params in results.items():
            sd = density(params)
            fig = Figure(figsize=(6.0, 4.0))
            FigureCanvasAgg(fig)
            title = f"Hessian spectral density, {label} (SLQ, {num_probes} probes × {steps} steps)"
            _draw_spectral_density(fig, sd, title)
            path = run_dir / f"spectral_density_{_safe_label(label)}.png"
            fig.savefig(path, dpi=100)
            paths.append(str(path))
        return paths

    return plot


def _draw_spectral_density(fig: Any, sd: Any, title: str) -> None:
    """The density ``sd`` (grid and density) on a log scale, floored at 1e-10 of its peak."""
    grid = np.asarray(sd.grid, np.float64)
    dens = np.asarray(sd.density, np.float64)
    floor = max(float(np.max(dens)), 1e-300) * 1e-10
    ax = fig.add_subplot()
    ax.semilogy(grid, np.maximum(dens, floor))
    ax.set_xlabel("Hessian eigenvalue λ")
    ax.set_ylabel("density (normalized)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()


@register("mlp_spectrum")
def mlp_spectrum(
    *,
    key: jax.Array,
    hidden: int = 32,
    l2: float = 1e-4,
    num_eigenvalues: int = 5,
    num_probes: int = 3,
    lanczos_steps: int = 40,
) -> Problem:
    """:func:`mlp_digits`, plus a look at the Hessian spectrum where each run ends.

    The training problem is exactly :func:`mlp_digits` (same ``key``, ``hidden``,
    ``l2``). After the runs, the report estimates at each final point the top
    ``num_eigenvalues`` Hessian eigenvalues and the smallest one (Lanczos,
    :func:`newtonjax.hessian_eigenvalues`) and the trace (Hutchinson,
    :func:`newtonjax.hessian_trace`, 20 probes); the plot hook draws the eigenvalue
    density by stochastic Lanczos quadrature
    (:func:`newtonjax.hessian_spectral_density`) into
    ``spectral_density_<label>.png`` per optimizer. Typical picture: a bulk near 0
    and a few large outliers (about one per class), with small negative eigenvalues
    away from a minimum (Sagun et al. 2017; Ghorbani et al. 2019).

    The analysis uses the fixed key ``jax.random.PRNGKey(0)``
    (:data:`SPECTRUM_SEED`), not the run's key, so every optimizer's final point is
    probed with the same random vectors and the figures are comparable. It is
    jitted once per problem and takes a few seconds on a CPU for ``hidden=32``.

    Args:
      key: PRNG key of the run (initialization of the MLP only).
      hidden: width of the hidden layer.
      l2: ridge coefficient on the weights.
      num_eigenvalues: how many of the largest eigenvalues to report (``>= 1``).
      num_probes: probe vectors of the density estimate (``>= 1``).
      lanczos_steps: Lanczos steps for the eigenvalues and per density probe
        (``>= 2``; capped at the number of parameters).

    Returns:
      The :func:`mlp_digits` problem with a ``report`` (its loss and accuracy plus
      ``top_eigenvalues``, ``min_eigenvalue``, ``trace_estimate``) and a ``plot``
      hook ``({label: final params}, run_dir) -> [paths of the PNG files]``.

    References:
      Ubaru, Chen & Saad (2017), SIAM J. Matrix Anal. Appl. 38(4), §3 (stochastic
      Lanczos quadrature); Ghorbani, Krishnan & Xiao (2019), ICML, §2–3; Sagun et
      al. (2017), arXiv:1706.04454; Hutchinson (1990).
    """
    fn = "mlp_spectrum"
    _check_int(fn, "num_eigenvalues", num_eigenvalues, 1)
    _check_int(fn, "num_probes", num_probes, 1)
    _check_int(fn, "lanczos_steps", lanczos_steps, 2)
    base = mlp_digits(key=key, hidden=hidden, l2=l2)
    objective = base.objective
    steps = _spectrum_lanczos_steps(fn, base.init_params, num_eigenvalues, lanczos_steps)
    trace_samples = 20
    analyze = _spectrum_analysis(objective, num_eigenvalues, steps, trace_samples)

    def report(params: Any) -> dict[str, Any]:
        out = dict(base.report(params))
        top, bottom, trace = analyze(params)
        out.update(
            top_eigenvalues=_to_host(top),
            min_eigenvalue=_to_host(bottom),
            trace_estimate=_to_host(trace),
            lanczos_steps=steps,
            trace_samples=trace_samples,
        )
        return out

    return Problem(
        name=f"mlp_spectrum_h{hidden}",
        objective=objective,
        init_params=base.init_params,
        metrics=base.metrics,
        report=report,
        plot=_spectral_density_plot(fn, objective, num_probes, steps),
        description=base.description + "; Hessian spectrum at the final points",
    )
