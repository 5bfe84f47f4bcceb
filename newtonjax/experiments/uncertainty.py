r"""The ``uncertainty:`` section of a config: curvature at an optimizer's solution.

Two kinds, each a call of the public API on the final params of one optimizer:

* ``covariance`` — ``nj.parameter_covariance`` of a least-squares problem,
  ``Σ = s² (JᵀJ)⁻¹`` with ``s² = ‖r‖²/(m − n)`` (Bates & Watts 1988, §2.3): standard
  errors ``sqrt(diag Σ)``, ``level`` confidence intervals ``θ ± t·se`` with the
  Student-t quantile ``t = t_{(1+level)/2, m−n}``, and, for a problem with a
  Gaussian :class:`~newtonjax.experiments.problems.base.StatisticalModel`, the
  delta-method bands of the fitted curve (Bates & Watts 1988, §2.3.1): with
  ``g(x) = ∂f(x; θ̂)/∂θ``, the confidence band ``f ± t·sqrt(gᵀΣg)`` of the mean
  response and the prediction band ``f ± t·sqrt(gᵀΣg + s²)`` of a new observation.
* ``laplace`` — ``nj.laplace`` of the negative log likelihood with the isotropic
  prior ``N(0, δ⁻¹ I)`` (MacKay 1992; Daxberger et al. 2021): the posterior
  standard deviations, the log evidence ``post.log_marginal_likelihood()`` and the
  linearized predictive ``post.predictive`` over the problem's plot inputs
  (Immer, Korzepa & Bauer 2021), turned into a class probability by the probit
  approximation ``p ≈ σ(μ / sqrt(1 + πσ²/8))`` for a Bernoulli likelihood (MacKay
  1992b, §3). With ``tune_prior``, ``s = log δ`` maximizes the evidence
  ``L(δ) = log p(D | δ)`` by optax's L-BFGS (Nocedal & Wright 2006, Alg. 7.5; without
  a line search, so in one dimension a secant iteration on ``dL/ds``; the first step
  has unit length) on ``jax.grad`` of

      L(δ) = nj.laplace(nll, w*(δ), prior_precision=δ).log_marginal_likelihood(),
      w*(δ) = nj.minimize(nll + ½ δ‖·‖², start).params,

  differentiated through the solve by its implicit rule and through the
  log-determinant (MacKay 1992 §4; Immer et al. 2021 §4). It stops after
  ``tune_steps`` iterations or once ``|dL/ds| <= 1000 ε max(1, |L|)``; the report
  gives the final gradient and ``converged`` (``|dL/ds| <= sqrt(ε) max(1, |L|)``).

References:
  Bates, D. M. & Watts, D. G. (1988). Nonlinear Regression Analysis and Its
  Applications. Wiley, §2.3.
  MacKay, D. J. C. (1992). A practical Bayesian framework for backpropagation
  networks. Neural Computation 4(3), §4 (the evidence), §6 (error bars).
  MacKay, D. J. C. (1992b). The evidence framework applied to classification
  networks. Neural Computation 4(5), §3 (moderated outputs).
  Daxberger, E. et al. (2021). Laplace Redux. NeurIPS, §2–3.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., §7.2.
  Immer, A., Korzepa, M. & Bauer, M. (2021). Improving predictions of Bayesian
  neural nets via local linearization. AISTATS, §3–4.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

import newtonjax as nj
from newtonjax.experiments.config import ConfigError, UncertaintyConfig
from newtonjax.experiments.problems import base

__all__ = ["Analysis", "check_problem", "targets", "analyse", "write_figure"]


@dataclasses.dataclass
class Analysis:
    """One optimizer's analysis: the JSON report and the arrays its figure needs."""

    report: dict[str, Any]
    figure: dict[str, Any] | None = None


# ---------------------------------------------------------------- before the run


def _laplace_parts(problem: base.Problem):
    """``(fun, prior precision inside the objective)`` that the Laplace kind uses."""
    model = problem.statistical_model
    if model is not None:
        return model.negative_log_likelihood, float(model.prior_precision)
    return problem.objective, 0.0


def check_problem(section: UncertaintyConfig, problem: base.Problem, name: str) -> None:
    """Raise :class:`ConfigError` if ``problem`` cannot give what ``section`` asks."""
    where = f"uncertainty (problem {name!r})"
    if problem.batch_size:
        raise ConfigError(f"{where}: a batch problem has no single solution to analyse")
    if section.kind == "covariance":
        if not isinstance(problem.objective, nj.LeastSquaresObjective):
            raise ConfigError(
                f"{where}: kind covariance needs a least-squares problem (residuals), but the "
                "objective is not one; use kind: laplace"
            )
        return
    fun, own_prior = _laplace_parts(problem)
    if section.curvature == "ggn" and not isinstance(fun, nj.CompositeObjective):
        raise ConfigError(
            f"{where}: curvature ggn needs a least-squares or composite objective, but the "
            "problem's is a plain scalar function; use curvature: hessian"
        )
    n = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(problem.init_params))
    if section.rank is not None and section.rank > n:
        raise ConfigError(f"uncertainty.rank: must be <= n = {n} parameters, got {section.rank}")
    start = own_prior if section.prior_precision is None else section.prior_precision
    if section.tune_prior and not start > 0:
        raise ConfigError(
            f"uncertainty.prior_precision: tune_prior starts from it on a log scale, but "
            f"problem {name!r} has no prior of its own; give prior_precision > 0"
        )
    if section.structure == "lowrank" and section.rank != n and not start > 0:
        raise ConfigError(
            "uncertainty.prior_precision: structure lowrank with rank < n needs a prior "
            "precision > 0 for the directions it leaves out"
        )


def targets(section: UncertaintyConfig, labels: list[str], swept: str | None) -> list[str]:
    """Labels of the runs to analyse: the named optimizer (every variant of a swept
    one) or, by default, the first run."""
    if section.optimizer is None:
        return labels[:1]
    if section.optimizer == swept:
        return [label for label in labels if label.startswith(f"{swept}(")]
    return [section.optimizer]


# -------------------------------------------------------------------- analyses


def _flat(tree) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], np.float64)


def analyse(
    section: UncertaintyConfig, problem: base.Problem, params: Any, key: jax.Array
) -> Analysis:
    """The report (and figure data) of ``section`` at ``params``.

    A library error at run time (a rank-deficient Jacobian, a precision that is not
    positive definite) is reported as ``{"error": message}``, never as numbers.
    """
    try:
        if section.kind == "covariance":
            return _covariance(section, problem, params)
        return _laplace(section, problem, params, key)
    except (ValueError, TypeError) as err:
        return Analysis({"kind": section.kind, "error": str(err)})


def _args(problem: base.Problem) -> tuple:
    return (problem.data,) if problem.data is not None else ()


def _covariance(section, problem, params) -> Analysis:
    residual_fn = problem.objective.residual_fn
    args = _args(problem)
    cov = np.asarray(nj.parameter_covariance(residual_fn, params, *args), np.float64)
    residuals = _flat(residual_fn(params, *args))
    theta = _flat(params)
    m, n = residuals.size, theta.size
    dof = m - n
    s2 = float(residuals @ residuals) / dof
    se = np.sqrt(np.diag(cov))
    import scipy.stats  # part of the experiments extra

    t = float(scipy.stats.t.ppf(0.5 + section.level / 2, dof))  # two-sided quantile
    report = {
        "kind": "covariance",
        "params": theta.tolist(),
        "standard_errors": se.tolist(),
        "covariance": cov.tolist(),
        "residual_variance": s2,
        "num_observations": m,
        "degrees_of_freedom": dof,
        "level": section.level,
        "t_quantile": t,
        "confidence_intervals": np.stack([theta - t * se, theta + t * se], axis=1).tolist(),
        "note": "covariance = s^2 (J^T J)^-1 with s^2 = |r|^2 / (m - n): scipy curve_fit's pcov "
        "(absolute_sigma=False); entries in ravel_pytree order",
    }
    model = problem.statistical_model
    if model is None or model.likelihood != "gaussian":
        return Analysis(report)
    inputs = np.asarray(model.inputs)
    curve = (
        model.plot_inputs is not None
        and not isinstance(model.plot_inputs, tuple)
        and np.ndim(model.plot_inputs) == 1 == inputs.ndim
    )
    grid = np.asarray(model.plot_inputs) if curve else inputs[:0]
    cov_j = jnp.asarray(cov, jax.tree.leaves(params)[0].dtype)
    # One call for the data and the plot grid: f and sqrt(gᵀΣg) at each input.
    both = _delta_method(model.model_fn)(params, jnp.concatenate([inputs, grid]), cov_j)
    values, sds = (np.asarray(a, np.float64) for a in both)
    fitted, sd_data = values[: len(inputs)], sds[: len(inputs)]
    inside = np.abs(np.asarray(model.targets, np.float64) - fitted) <= t * np.sqrt(sd_data**2 + s2)
    report["points_in_prediction_band"] = int(np.sum(inside))
    figure = None
    if curve:
        mean, sd_mean = values[len(inputs) :], sds[len(inputs) :]
        figure = {
            "type": "band",
            "inputs": np.asarray(model.inputs, np.float64),
            "targets": np.asarray(model.targets, np.float64),
            "fitted": fitted,
            "grid": grid.astype(np.float64),
            "mean": mean,
            "sd_mean": sd_mean,
            "sd_pred": np.sqrt(sd_mean**2 + s2),
            "quantile": t,
            "level": section.level,
            "theta": theta,
            "se": se,
        }
    return Analysis(report, figure)


def _delta_method(model_fn):
    """Jitted ``(params, x, Σ) -> (f(x; θ), sqrt(g Σ gᵀ))`` with ``g = ∂f/∂θ`` per input."""

    @jax.jit
    def bands(params, x, cov):
        def response(flat):
            return model_fn(unravel(flat), x)

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        g = jax.jacfwd(response)(flat)  # (k, n)
        var = jnp.einsum("ij,jk,ik->i", g, cov.astype(g.dtype), g, precision="highest")
        return response(flat), jnp.sqrt(jnp.maximum(var, 0.0))

    return bands


def _tree_sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree))


def _laplace(section, problem, params, key) -> Analysis:
    fun, own_prior = _laplace_parts(problem)
    args = _args(problem)
    options = {
        "curvature": section.curvature or "hessian",
        "structure": section.structure or "full",
        "rank": section.rank,
        "key": key if section.structure == "lowrank" else None,
    }

    def penalized(w, delta, *data):
        return fun(w, *data) + 0.5 * delta * _tree_sq_norm(w)

    def mode(delta, start):
        return nj.minimize(penalized, start, args=(delta, *args)).params

    def evidence(log_delta, start):
        """``(L(δ), w*(δ))`` at ``δ = exp(log_delta)``, the mode refitted from ``start``."""
        delta = jnp.exp(log_delta)
        w = mode(delta, start)
        post = nj.laplace(fun, w, *args, prior_precision=delta, **options)
        return post.log_marginal_likelihood(), w

    delta = own_prior if section.prior_precision is None else float(section.prior_precision)
    report: dict[str, Any] = {"kind": "laplace", **{k: options[k] for k in options if k != "key"}}
    refit = delta != own_prior
    tuning = None
    if section.tune_prior:
        tuning, params = _tune_prior(evidence, delta, params, section.tune_steps)
        delta = math.exp(tuning["trace_log_prior_precision"][-1])
        refit = True
    elif refit:
        params = jax.jit(mode)(jnp.asarray(delta, jnp.result_type(float)), params)
    post = nj.laplace(fun, params, *args, prior_precision=delta, **options)
    grad = jax.jit(jax.grad(penalized))(params, jnp.asarray(delta, jnp.result_type(float)), *args)
    report.update(
        {
            "prior_precision": delta,
            "refit_mode": refit,
            "mode": _flat(params).tolist(),
            "grad_norm_at_mode": float(np.max(np.abs(_flat(grad)))),
            "posterior_sd": np.sqrt(_flat(post.variance())).tolist(),
            "log_marginal_likelihood": float(post.log_marginal_likelihood()),
            "positive_definite": bool(post.positive_definite),
        }
    )
    if tuning is not None:
        report["tuning"] = tuning
    model = problem.statistical_model
    if model is None or model.plot_inputs is None:
        return Analysis(report)
    figure = _predictive_figure(post, model)
    figure["tuning"] = tuning
    figure["level"] = section.level
    report["predictive_sd_range"] = [float(np.min(figure["sd"])), float(np.max(figure["sd"]))]
    return Analysis(report, figure)


def _tune_prior(evidence, delta: float, start: Any, max_steps: int) -> tuple[dict[str, Any], Any]:
    """Maximize ``evidence(log δ, start)[0]`` over ``log δ`` from ``log delta`` (L-BFGS);
    the report and the mode at the last ``δ``."""
    dtype = jnp.result_type(float)
    eps = float(jnp.finfo(dtype).eps)

    def negative(s, w):
        value, mode = evidence(s, w)
        return -value, mode

    value_and_grad = jax.jit(jax.value_and_grad(negative, has_aux=True))
    opt = optax.lbfgs(learning_rate=1.0, linesearch=None)
    update = jax.jit(opt.update)
    log_delta = jnp.asarray(math.log(delta), dtype)
    state = opt.init(log_delta)
    trace_s, trace_l = [], []
    for _ in range(max_steps + 1):
        (value, mode), grad = value_and_grad(log_delta, start)
        trace_s.append(float(log_delta))
        trace_l.append(-float(value))
        if not (math.isfinite(trace_s[-1]) and math.isfinite(trace_l[-1])):
            raise ValueError(
                f"tune_prior: the Laplace evidence is not finite at log prior_precision = "
                f"{trace_s[-1]:.4g} (step {len(trace_s) - 1}); start from another "
                "prior_precision or use tune_steps to stop earlier"
            )
        if len(trace_s) > max_steps or abs(float(grad)) <= 1e3 * eps * max(1.0, abs(trace_l[-1])):
            break
        updates, state = update(grad, state, log_delta)
        log_delta = optax.apply_updates(log_delta, updates).astype(dtype)
    gradient = -float(grad)
    report = {
        "initial_prior_precision": delta,
        "initial_log_marginal_likelihood": trace_l[0],
        "iterations": len(trace_s) - 1,
        "gradient_wrt_log_prior_precision": gradient,
        "converged": abs(gradient) <= math.sqrt(eps) * max(1.0, abs(trace_l[-1])),
        "trace_log_prior_precision": trace_s,
        "trace_log_marginal_likelihood": trace_l,
    }
    return report, mode


def _predictive_figure(post, model: base.StatisticalModel) -> dict[str, Any]:
    """The linearized predictive over the plot inputs: a curve or a map."""
    plot_inputs = model.plot_inputs
    if isinstance(plot_inputs, tuple):  # two axes: the map over their grid
        uu, vv = np.meshgrid(*plot_inputs)
        inputs = np.stack([uu.ravel(), vv.ravel()], axis=1)
    else:
        inputs = np.asarray(plot_inputs)
    predictive = post.predictive(model.model_fn, jnp.asarray(inputs))
    mean = np.asarray(predictive.mean, np.float64)
    sd = np.sqrt(np.asarray(predictive.variance, np.float64))
    figure = {
        "type": "map" if isinstance(plot_inputs, tuple) else "curve",
        "likelihood": model.likelihood,
        "inputs": np.asarray(model.inputs, np.float64),
        "targets": np.asarray(model.targets, np.float64),
        "mean": mean,
        "sd": sd,
    }
    if model.likelihood == "bernoulli":
        figure["probability"] = 1.0 / (1.0 + np.exp(-mean / np.sqrt(1.0 + np.pi * sd**2 / 8.0)))
    if isinstance(plot_inputs, tuple):
        figure["axes"] = tuple(np.asarray(a, np.float64) for a in plot_inputs)
        for name in ("mean", "sd", "probability"):
            if name in figure:
                figure[name] = figure[name].reshape(uu.shape)
    else:
        figure["grid"] = inputs.astype(np.float64)
    return figure


# -------------------------------------------------------------------- figures


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_") or "run"


def write_figure(analysis: Analysis, run_dir: str | Path, label: str) -> Path | None:
    """Draw ``analysis`` into ``run_dir/uncertainty_<label>.png`` (a new file)."""
    if analysis.figure is None:
        return None
    from newtonjax.experiments import plots

    run_dir = Path(run_dir)
    path = run_dir / f"uncertainty_{_safe(label)}.png"
    k = 1
    while path.exists():  # never overwrite what the run folder already holds
        path = run_dir / f"uncertainty_{_safe(label)}-{k}.png"
        k += 1
    figure = analysis.figure
    if figure["type"] == "band":
        return plots.fit_band(path, figure, title=label)
    return plots.predictive(path, figure, title=label)
