"""The ``uncertainty:`` section of experiment configs and the two configs that use it.

References, independent of the code under test: ``scipy.optimize.curve_fit``'s
``pcov`` and ``scipy.stats.t`` for the covariance kind (and the analytic Misra1a
gradient for the delta-method band); for the Laplace kind a NumPy/SciPy evidence of
Bayesian logistic regression (the mode by ``scipy.optimize.minimize`` with the exact
gradient and Hessian, ``log det`` by ``numpy.linalg.slogdet``) and its central
finite difference in ``log δ``.
"""

import copy
import json
import math
import pathlib

import jax
import matplotlib.image
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

import newtonjax as nj
from newtonjax import _uncertainty
from newtonjax.experiments import runner, uncertainty
from newtonjax.experiments.config import (
    LAPLACE_CURVATURES,
    LAPLACE_STRUCTURES,
    ConfigError,
    load_config,
    parse_config,
)
from newtonjax.experiments.problems import builtin, nist
from newtonjax.experiments.problems.base import PROBLEMS, Problem

ROOT = pathlib.Path(__file__).resolve().parents[2]
CURVE_FIT = ROOT / "configs" / "curve_fit_band.yaml"
BAYESIAN = ROOT / "configs" / "bayesian_logistic.yaml"

# Tolerances, in one place.
SE_RTOL = 1e-6  # standard errors vs curve_fit (both fits converged to ~1e-9)
PARAMS_RTOL = 1e-8  # fitted params vs curve_fit (ours are nearer NIST's certified ones)
EVIDENCE_RTOL = 1e-8  # Laplace evidence vs the NumPy/SciPy reference at the same δ
FD_STEP = 1e-4  # central difference step in log δ
FD_GRAD_ATOL = 1e-5  # |dL/dlog δ| at the tuned δ (the gradient far from it is ~1)

LAPLACE = {
    "name": "u",
    "x64": True,
    "problem": {"name": "moons_logistic"},
    "optimizers": [{"name": "newton"}],
    "uncertainty": {"kind": "laplace"},
}
COVARIANCE = {
    "name": "u",
    "x64": True,
    "problem": {"name": "nist"},
    "optimizers": [{"name": "levenberg_marquardt"}],
    "uncertainty": {"kind": "covariance"},
}


def with_section(base, **section):
    data = copy.deepcopy(base)
    data["uncertainty"].update(section)
    return data


BAD = [
    (
        "unknown key",
        with_section(LAPLACE, tune=True),
        "uncertainty: unknown key 'tune'; valid keys: kind, optimizer, level, curvature",
    ),
    (
        "unknown kind",
        with_section(LAPLACE, kind="fisher"),
        "uncertainty.kind: unknown kind 'fisher'; valid choices: covariance, laplace",
    ),
    (
        "unknown curvature",
        with_section(LAPLACE, curvature="fisher"),
        "uncertainty.curvature: unknown curvature 'fisher'; valid choices: hessian, ggn",
    ),
    (
        "unknown structure",
        with_section(LAPLACE, structure="kron"),
        "uncertainty.structure: unknown structure 'kron'; valid choices: full, diag, lowrank",
    ),
    (
        "lowrank without rank",
        with_section(LAPLACE, structure="lowrank"),
        "uncertainty.rank: structure lowrank needs rank",
    ),
    (
        "rank without lowrank",
        with_section(LAPLACE, rank=3),
        "uncertainty.rank: used only with structure: lowrank",
    ),
    (
        "laplace key with covariance",
        with_section(COVARIANCE, curvature="ggn"),
        "uncertainty.curvature: used only with kind: laplace",
    ),
    (
        "tuning with covariance",
        with_section(COVARIANCE, tune_prior=True),
        "uncertainty.tune_prior: used only with kind: laplace",
    ),
    (
        "level out of range",
        with_section(COVARIANCE, level=95),
        "uncertainty.level: must be in (0, 1)",
    ),
    (
        "unknown optimizer label",
        with_section(COVARIANCE, optimizer="lm"),
        "uncertainty.optimizer: unknown optimizer label 'lm'; valid choices: levenberg_marquardt",
    ),
    (
        "negative prior",
        with_section(LAPLACE, prior_precision=-1.0),
        "uncertainty.prior_precision: must be a finite number >= 0",
    ),
    (
        "tuning from a zero prior",
        with_section(LAPLACE, tune_prior=True, prior_precision=0.0),
        "uncertainty.prior_precision: tune_prior starts from it on a log scale",
    ),
    (
        "no tuning steps",
        with_section(LAPLACE, tune_steps=0),
        "uncertainty.tune_steps: must be >= 1",
    ),
    (
        "tuning a low-rank posterior",
        with_section(LAPLACE, tune_prior=True, structure="lowrank", rank=3),
        "uncertainty.structure: tune_prior needs the gradient of the evidence",
    ),
    (
        "wrong type",
        with_section(LAPLACE, tune_prior="yes"),
        "uncertainty.tune_prior: expected true",
    ),
]


@pytest.mark.parametrize("what,data,message", BAD, ids=[b[0] for b in BAD])
def test_bad_uncertainty_sections_name_the_key_and_the_choices(what, data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value), str(info.value)


def test_choices_are_the_library_s():
    assert LAPLACE_CURVATURES == _uncertainty.CURVATURES
    assert LAPLACE_STRUCTURES == _uncertainty.STRUCTURES


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {**COVARIANCE, "problem": {"name": "saddle"}, "optimizers": [{"name": "newton"}]},
            "kind covariance needs a least-squares problem",
        ),
        (
            {**with_section(LAPLACE, curvature="ggn"), "problem": {"name": "saddle"}},
            "curvature ggn needs a least-squares or composite objective",
        ),
        (
            {**with_section(LAPLACE, tune_prior=True), "problem": {"name": "saddle"}},
            "has no prior of its own; give prior_precision > 0",
        ),
        (
            with_section(LAPLACE, structure="lowrank", rank=11),
            "uncertainty.rank: must be <= n = 10 parameters",
        ),
    ],
)
def test_problem_that_cannot_give_the_analysis_fails_before_the_run(tmp_path, data, message):
    config = parse_config(data)
    with pytest.raises(ConfigError, match=message):
        runner.run_experiment(config, device=jax.devices()[0], output_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists(), "nothing is written for a config that cannot run"


def test_targets_default_named_and_swept():
    section = parse_config(COVARIANCE).uncertainty
    labels = ["lm", "adam(learning_rate=0.1)", "adam(learning_rate=0.01)"]
    assert uncertainty.targets(section, labels, None) == ["lm"]
    named = parse_config(
        {
            **COVARIANCE,
            "optimizers": [
                {"name": "levenberg_marquardt", "label": "lm"},
                {"name": "adam", "params": {"learning_rate": 0.1}},
            ],
            "uncertainty": {"optimizer": "adam"},
            "sweep": {"optimizer": "adam", "param": "learning_rate", "values": [0.1, 0.01]},
        }
    ).uncertainty
    assert uncertainty.targets(named, labels, "adam") == labels[1:]


def run(path, overrides, tmp_path):
    """Run a config through the runner API; the run folder and its summary."""
    config = load_config(path, ["run.progress=false", *overrides])
    device = runner.setup_platform(config)
    run_dir = runner.run_experiment(config, device=device, output_dir=tmp_path)
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def assert_image(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and np.ptp(image[..., :3]) > 0.5, f"{path.name} is blank"


def test_curve_fit_band_matches_curve_fit(tmp_path):
    run_dir, summary = run(CURVE_FIT, ["run.steps=40"], tmp_path)
    report = summary["uncertainty"]["levenberg_marquardt"]
    data = nist.load("Misra1a")
    x, y = np.asarray(data.x), np.asarray(data.y)

    def model(x, b1, b2):
        return b1 * (1.0 - np.exp(-b2 * x))

    popt, pcov = scipy.optimize.curve_fit(
        model, x, y, p0=data.starts[0], ftol=1e-15, xtol=1e-15, gtol=1e-15
    )
    se = np.sqrt(np.diag(pcov))
    np.testing.assert_allclose(report["params"], popt, rtol=PARAMS_RTOL)
    np.testing.assert_allclose(report["standard_errors"], se, rtol=SE_RTOL)
    np.testing.assert_allclose(report["covariance"], pcov, rtol=SE_RTOL)
    dof = len(x) - 2
    t = scipy.stats.t.ppf(0.975, dof)
    assert report["degrees_of_freedom"] == dof
    assert report["t_quantile"] == pytest.approx(t, rel=1e-12)
    np.testing.assert_allclose(
        report["confidence_intervals"], np.stack([popt - t * se, popt + t * se], 1), rtol=SE_RTOL
    )
    # Prediction band at the data by the analytic gradient of the model.
    b1, b2 = popt
    g = np.stack([1.0 - np.exp(-b2 * x), b1 * x * np.exp(-b2 * x)], axis=1)
    s2 = np.sum((y - model(x, *popt)) ** 2) / dof
    sd_pred = np.sqrt(np.einsum("ij,jk,ik->i", g, pcov, g) + s2)
    inside = np.abs(y - model(x, *popt)) <= t * sd_pred
    assert report["points_in_prediction_band"] == int(inside.sum())
    assert report["residual_variance"] == pytest.approx(s2, rel=SE_RTOL)
    assert_image(run_dir / "uncertainty_levenberg_marquardt.png")
    assert "## Uncertainty" in (run_dir / "summary.md").read_text()


def reference_evidence(phi, t, log_delta, w0):
    """Laplace log evidence of logistic regression, NumPy/SciPy only; and the mode."""
    delta = math.exp(log_delta)

    def f(w):
        z = phi @ w
        return np.sum(np.logaddexp(0.0, z) - t * z) + 0.5 * delta * w @ w

    def grad(w):
        p = scipy.special.expit(phi @ w)
        return phi.T @ (p - t) + delta * w

    def hess(w):
        p = scipy.special.expit(phi @ w)
        return phi.T @ (phi * (p * (1 - p))[:, None]) + delta * np.eye(len(w))

    fit = scipy.optimize.minimize(f, w0, jac=grad, hess=hess, method="trust-exact", tol=1e-14)
    w = fit.x
    _, logdet = np.linalg.slogdet(hess(w))
    n = len(w)
    value = -f(w) + 0.5 * n * math.log(delta) - 0.5 * logdet
    return value, w, hess(w)


def numpy_features(points, degree):
    u = points[:, 0] - 0.5
    v = (points[:, 1] - 0.25) / 0.6
    return np.stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)], 1)


@pytest.mark.slow
def test_bayesian_logistic_tunes_the_prior_to_the_evidence_maximum(tmp_path):
    run_dir, summary = run(BAYESIAN, ["run.steps=8"], tmp_path)
    report = summary["uncertainty"]["newton"]
    tuning = report["tuning"]
    config = load_config(BAYESIAN)
    params = config.problem.params
    points, labels = builtin.two_moons(jax.random.PRNGKey(config.seed), 120, params["noise"])
    phi = numpy_features(np.asarray(points), params["degree"])
    t = np.asarray(labels)
    w0 = np.zeros(phi.shape[1])

    def evidence(s):
        return reference_evidence(phi, t, s, w0)[0]

    s0 = math.log(tuning["initial_prior_precision"])
    s_star = math.log(report["prior_precision"])
    assert s0 == math.log(params["prior_precision"])
    # The evidence at both ends agrees with the reference, and it went up.
    assert tuning["initial_log_marginal_likelihood"] == pytest.approx(
        evidence(s0), rel=EVIDENCE_RTOL
    )
    value, mode, precision = reference_evidence(phi, t, s_star, w0)
    assert report["log_marginal_likelihood"] == pytest.approx(value, rel=EVIDENCE_RTOL)
    assert value > evidence(s0) + 1.0
    # A maximum: zero slope by a central difference of the reference, lower on both sides.
    slope = (evidence(s_star + FD_STEP) - evidence(s_star - FD_STEP)) / (2 * FD_STEP)
    assert (
        abs(slope) < FD_GRAD_ATOL and abs(tuning["gradient_wrt_log_prior_precision"]) < FD_GRAD_ATOL
    )
    assert tuning["converged"]
    start_slope = (evidence(s0 + FD_STEP) - evidence(s0 - FD_STEP)) / (2 * FD_STEP)
    assert abs(start_slope) > 0.1, "the finite difference sees the slope away from the optimum"
    assert evidence(s_star - 0.2) < value and evidence(s_star + 0.2) < value
    # The posterior at the tuned prior.
    np.testing.assert_allclose(report["mode"], mode, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        report["posterior_sd"], np.sqrt(np.diag(np.linalg.inv(precision))), rtol=1e-7
    )
    assert report["positive_definite"] and report["grad_norm_at_mode"] < 1e-8
    assert_image(run_dir / "uncertainty_newton.png")


def test_laplace_at_the_problem_s_own_prior_without_tuning(tmp_path):
    # Laplace at Newton's MAP with the problem's prior: no refit, the posterior SDs of
    # the dense precision Φᵀ diag(p(1 − p)) Φ + δI (NumPy), and the linearized
    # predictive SD sqrt(φᵀ Σ φ) over the plot grid (figures off: drawn in the slow run).
    config = parse_config(
        with_section(
            {**LAPLACE, "problem": {"name": "moons_logistic", "params": {"num_points": 40}}},
            curvature="ggn",
        )
        | {"run": {"steps": 12, "progress": False}, "output": {"plots": False}}
    )
    run_dir = runner.run_experiment(config, device=jax.devices()[0], output_dir=tmp_path)
    report = json.loads((run_dir / "summary.json").read_text())["uncertainty"]["newton"]
    points, labels = builtin.two_moons(jax.random.PRNGKey(0), 40, 0.25)
    phi = numpy_features(np.asarray(points), 3)
    value, mode, precision = reference_evidence(phi, np.asarray(labels), 0.0, np.zeros(10))
    assert not report["refit_mode"] and report["prior_precision"] == 1.0
    np.testing.assert_allclose(report["mode"], mode, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        report["posterior_sd"], np.sqrt(np.diag(np.linalg.inv(precision))), rtol=1e-7
    )
    assert report["log_marginal_likelihood"] == pytest.approx(value, rel=EVIDENCE_RTOL)
    uu, vv = np.meshgrid(np.linspace(-1.8, 2.8, 120), np.linspace(-1.4, 1.9, 100))
    phi_grid = numpy_features(np.stack([uu.ravel(), vv.ravel()], axis=1), 3)
    sd = np.sqrt(np.sum((phi_grid @ np.linalg.inv(precision)) * phi_grid, axis=1))
    np.testing.assert_allclose(report["predictive_sd_range"], [sd.min(), sd.max()], rtol=1e-7)
    assert not list(run_dir.glob("*.png"))


def test_moons_logistic_problem_matches_numpy():
    problem = PROBLEMS["moons_logistic"](key=jax.random.PRNGKey(3), num_points=30, degree=2)
    points = np.asarray(problem.statistical_model.inputs)
    t = np.asarray(problem.statistical_model.targets)
    assert points.shape == (30, 2) and set(np.unique(t)) == {0.0, 1.0}
    phi = numpy_features(points, 2)
    w = np.linspace(-1.0, 1.0, phi.shape[1])
    nll = np.sum(np.logaddexp(0.0, phi @ w) - t * (phi @ w))
    assert float(problem.statistical_model.negative_log_likelihood(w)) == pytest.approx(nll)
    assert float(problem.objective(w)) == pytest.approx(nll + 0.5 * w @ w)
    with pytest.raises(ValueError, match="moons_logistic: degree must be an int >= 1"):
        PROBLEMS["moons_logistic"](key=jax.random.PRNGKey(0), degree=0)


def test_library_errors_are_reported_not_numbers():
    # A rank-deficient Jacobian (only b0 + b1 is determined) and an indefinite Hessian:
    # the analysis says what is wrong instead of giving standard errors.
    x = np.array([0.0, 1.0, 2.0])
    objective = nj.least_squares_objective(lambda b: (b[0] + b[1]) * x - x**2)
    problem = Problem(name="flat", objective=objective, init_params=np.ones(2))
    section = parse_config(COVARIANCE).uncertainty
    analysis = uncertainty.analyse(section, problem, np.ones(2), jax.random.PRNGKey(0))
    assert set(analysis.report) == {"kind", "error"} and analysis.figure is None
    assert (
        "parameter_covariance: the Jacobian has numerical rank 1 < n = 2"
        in (analysis.report["error"])
    )
    saddle = Problem(
        name="saddle", objective=lambda p: p[0] ** 2 - p[1] ** 2, init_params=np.zeros(2)
    )
    section = parse_config(LAPLACE).uncertainty
    analysis = uncertainty.analyse(section, saddle, np.zeros(2), jax.random.PRNGKey(0))
    assert (
        "laplace: the precision (curvature + prior_precision·I) is not positive definite"
        in (analysis.report["error"])
    )


def test_moons_logistic_follows_the_builder_contract():
    import inspect

    builder = PROBLEMS["moons_logistic"]
    signature = inspect.signature(builder)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in signature.parameters.values())
    assert signature.parameters["key"].annotation is jax.Array
    for name, param in signature.parameters.items():
        if name != "key":
            assert type(param.default) is param.annotation, name
    assert "References:" in builder.__doc__
