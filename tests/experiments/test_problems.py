"""Tests of the built-in experiment problems (``newtonjax.experiments.problems.builtin``).

Each objective is checked against an independent formula: ``scipy.optimize.rosen``,
closed forms (quadratic, saddle), NumPy/scikit-learn computations of the logistic and
MLP losses, the NIST certified residual sum of squares, a NumPy evaluation of the
curve-fit residuals, and dense eigenvalues for the spectrum report. Every builder is
also checked for the interface the runner relies on: signature, dtype, structure,
finite values and gradients, jit/vmap, JSON-serializable reports.
"""

import jax

jax.config.update("jax_enable_x64", True)

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.special  # noqa: E402

import newtonjax as nj  # noqa: E402
from newtonjax.experiments.problems import builtin, nist  # noqa: E402
from newtonjax.experiments.problems.base import PROBLEMS, Problem, builder_parameters  # noqa: E402

# Tolerances, in one place.
RTOL = 1e-12  # float64 agreement of two formulas for the same sum
NIST_RTOL = 1e-8  # certified RSS (11 digits) vs ½‖r‖² at the certified params
GGN_RTOL = 1e-10  # GGN vs Hessian products for the (linear-model) logistic loss
EIG_RTOL = 1e-6  # Lanczos top eigenvalue vs dense eigvalsh
F32_RTOL = 1e-4  # float32 objective vs float64

NAMES = [
    "rosenbrock",
    "quadratic",
    "saddle",
    "logistic_regression",
    "mlp_digits",
    "nist",
    "curve_fits",
    "mlp_spectrum",
]
# Defaults everywhere, except where an evaluation would be needlessly slow.
SMALL = {
    "curve_fits": {"num_fits": 8},
    "mlp_spectrum": {"hidden": 2, "num_eigenvalues": 2, "num_probes": 2, "lanczos_steps": 40},
}
LEAST_SQUARES = {"rosenbrock", "quadratic", "nist", "curve_fits"}
COMPOSITE = {"logistic_regression", "mlp_digits", "mlp_spectrum"}
KEY = jax.random.PRNGKey(0)


def takes_key(builder) -> bool:
    return "key" in inspect.signature(builder).parameters


@functools.cache
def build(name: str, **kwargs) -> Problem:
    builder = PROBLEMS[name]
    kwargs = {**SMALL.get(name, {}), **kwargs}
    if takes_key(builder):
        kwargs["key"] = KEY
    return builder(**kwargs)


@functools.cache
def _compiled(objective, batched: bool):
    # Jitted once per problem: one compile is far cheaper than op-by-op dispatch.
    value, grad = objective, jax.grad(objective)
    if batched:
        value, grad = jax.vmap(value), jax.vmap(grad)
    return jax.jit(value), jax.jit(grad)


def value_at(problem: Problem, params) -> jax.Array:
    """The loss at params (one instance), or the vector of losses of a batch problem."""
    value, _ = _compiled(problem.objective, bool(problem.batch_size))
    return value(params, problem.data) if problem.batch_size else value(params)


def grad_at(problem: Problem, params):
    _, grad = _compiled(problem.objective, bool(problem.batch_size))
    return grad(params, problem.data) if problem.batch_size else grad(params)


@functools.cache
def initial_report(name: str) -> dict:
    problem = build(name)
    return problem.report(problem.init_params)


def leaves(tree):
    return jax.tree_util.tree_leaves(tree)


# ---------------------------------------------------------------------------
# Interface.
# ---------------------------------------------------------------------------


def test_all_registered():
    assert set(NAMES) <= set(PROBLEMS)
    assert PROBLEMS["nist"] is builtin.nist_problem


@pytest.mark.parametrize("name", NAMES)
def test_signature_contract(name):
    builder = PROBLEMS[name]
    signature = inspect.signature(builder)
    for param in signature.parameters.values():
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, (name, param.name)
    for pname, param in builder_parameters(builder).items():
        assert param.default is not inspect.Parameter.empty, (name, pname)
        assert param.annotation in (int, float, str, bool), (name, pname, param.annotation)
        assert type(param.default) is param.annotation, (name, pname)
    if takes_key(builder):
        assert signature.parameters["key"].annotation is jax.Array
    assert builder.__doc__ and "References:" in builder.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_builds_finite_value_and_grad(name):
    problem = build(name)
    assert isinstance(problem, Problem) and problem.name and problem.description
    for leaf in leaves(problem.init_params):
        assert leaf.dtype == jnp.float64
        if problem.batch_size:
            assert leaf.shape[0] == problem.batch_size
    value = value_at(problem, problem.init_params)
    assert value.dtype == jnp.float64
    assert value.shape == ((problem.batch_size,) if problem.batch_size else ())
    assert np.all(np.isfinite(value))
    grads = grad_at(problem, problem.init_params)
    assert all(np.all(np.isfinite(g)) for g in leaves(grads))
    assert any(np.any(g != 0) for g in leaves(grads)), "the start is not a stationary point"


@pytest.mark.parametrize("name", NAMES)
def test_structured_objective(name):
    objective = build(name).objective
    if name in LEAST_SQUARES:
        assert isinstance(objective, nj.LeastSquaresObjective)
    if name in COMPOSITE:
        assert isinstance(objective, nj.CompositeObjective)
        assert not isinstance(objective, nj.LeastSquaresObjective)
    if name == "saddle":  # indefinite: no Gauss–Newton structure to offer
        assert not isinstance(objective, nj.CompositeObjective)


@pytest.mark.parametrize("name", NAMES)
def test_report_and_metrics_are_json(name):
    problem = build(name)
    report = initial_report(name)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    if problem.metrics is not None:
        metrics = problem.metrics(problem.init_params)
        for value in metrics.values():
            assert np.shape(value) == () and np.isfinite(value)
        if "accuracy" in metrics:
            assert 0.0 <= float(metrics["accuracy"]) <= 1.0
            assert float(metrics["accuracy"]) == pytest.approx(report["accuracy"])


class TestTransformations(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_objective_under_jit(self):
        for name in NAMES:
            problem = build(name)
            expected = value_at(problem, problem.init_params)
            if problem.batch_size:
                fn = self.variant(jax.vmap(problem.objective))
                got = fn(problem.init_params, problem.data)
            else:
                got = self.variant(problem.objective)(problem.init_params)
            np.testing.assert_allclose(got, expected, rtol=RTOL, err_msg=name)

    def test_vmap_over_params(self):
        # (curve_fits is vmapped in every test that evaluates it.)
        rng = np.random.default_rng(1)
        for name in ["rosenbrock", "saddle", "logistic_regression", "mlp_digits", "nist"]:
            problem = build(name)
            stacked = jax.tree_util.tree_map(
                lambda x: x + 0.1 * jnp.asarray(rng.normal(size=(3, *x.shape))),
                problem.init_params,
            )
            batched = jax.jit(jax.vmap(problem.objective))(stacked)
            looped = [
                value_at(problem, jax.tree_util.tree_map(lambda s, i=i: s[i], stacked))
                for i in range(3)
            ]
            np.testing.assert_allclose(batched, looped, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_float32_smoke(name):
    problem = build(name)
    params32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), problem.init_params)
    value32 = value_at(problem, params32)
    assert value32.dtype == jnp.float32
    np.testing.assert_allclose(value32, value_at(problem, problem.init_params), rtol=F32_RTOL)
    grads = grad_at(problem, params32)
    assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in leaves(grads))


# ---------------------------------------------------------------------------
# Each problem against an independent reference.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_rosenbrock_matches_scipy(dim):
    problem = PROBLEMS["rosenbrock"](dim=dim)
    expected_start = [-1.2 if i % 2 == 0 else 1.0 for i in range(dim)]
    np.testing.assert_array_equal(problem.init_params, expected_start)
    assert problem.target_loss == 1e-10
    rng = np.random.default_rng(dim)
    for x in [np.asarray(expected_start), *rng.normal(size=(3, dim))]:
        np.testing.assert_allclose(
            problem.objective(jnp.asarray(x)), scipy.optimize.rosen(x), rtol=RTOL
        )
    assert float(problem.objective(jnp.ones(dim))) == 0.0
    report = problem.report(jnp.ones(dim))
    assert report["distance_to_minimizer"] == 0.0 and report["value"] == 0.0
    assert problem.report(problem.init_params)["distance_to_minimizer"] == pytest.approx(
        np.linalg.norm(np.asarray(expected_start) - 1.0), rel=RTOL
    )


def test_quadratic_one_newton_step():
    problem = PROBLEMS["quadratic"]()
    center = np.array([1.0, 2.0, 3.0])
    w0 = problem.init_params
    np.testing.assert_array_equal(w0, np.zeros(3))
    rng = np.random.default_rng(0)
    for w in [np.zeros(3), *rng.normal(size=(2, 3))]:
        np.testing.assert_allclose(
            problem.objective(jnp.asarray(w)), np.sum((w - center) ** 2), rtol=RTOL
        )
    hess = nj.hessian_matrix(problem.objective, w0)
    np.testing.assert_allclose(hess, 2.0 * np.eye(3), rtol=RTOL)
    step = np.linalg.solve(hess, jax.grad(problem.objective)(w0))
    np.testing.assert_allclose(w0 - step, center, rtol=RTOL)
    report = problem.report(jnp.asarray(center))
    assert report["critical_point"] == "minimum" and report["is_critical"]
    assert report["final_params"] == center.tolist() and report["distance_to_minimizer"] == 0.0


def test_saddle_report_and_formula():
    problem = PROBLEMS["saddle"]()
    np.testing.assert_allclose(problem.init_params, [0.3, -0.2])
    x, y = 0.7, -1.3
    np.testing.assert_allclose(problem.objective(jnp.array([x, y])), x**2 + x * y - y**2, rtol=RTOL)
    report = problem.report(problem.init_params)
    origin = report["origin"]
    assert origin["kind"] == "saddle" and origin["is_critical"]
    np.testing.assert_allclose(origin["eigenvalues"], [-math.sqrt(5.0), math.sqrt(5.0)], rtol=RTOL)
    assert origin["grad_norm"] == 0.0
    final = report["final"]
    assert final["point"] == pytest.approx([0.3, -0.2]) and not final["is_critical"]
    # grad = (2x + y, x - 2y) = (0.4, 0.7)
    assert final["grad_norm"] == pytest.approx(0.7, rel=RTOL)
    assert "unbounded" in problem.description


def test_saddle_with_quartic_has_minima():
    quartic = 0.1
    problem = PROBLEMS["saddle"](quartic=quartic, x0=0.1, y0=0.5)
    np.testing.assert_allclose(problem.init_params, [0.1, 0.5])

    def f(p):
        return p[0] ** 2 + p[0] * p[1] - p[1] ** 2 + quartic * (p[0] ** 4 + p[1] ** 4)

    def grad(p):
        return [
            2 * p[0] + p[1] + 4 * quartic * p[0] ** 3,
            p[0] - 2 * p[1] + 4 * quartic * p[1] ** 3,
        ]

    def hess(p):
        return [[2 + 12 * quartic * p[0] ** 2, 1.0], [1.0, -2 + 12 * quartic * p[1] ** 2]]

    np.testing.assert_allclose(problem.objective(jnp.array([0.7, -1.3])), f([0.7, -1.3]))
    descent = scipy.optimize.minimize(f, [0.0, -1.0], jac=grad, method="BFGS").x
    found = scipy.optimize.root(grad, descent, jac=hess, tol=1e-14).x  # polish
    assert np.max(np.abs(grad(found))) < 1e-12
    report = problem.report(jnp.asarray(found))
    assert report["origin"]["kind"] == "saddle"
    assert report["final"]["kind"] == "minimum" and report["final"]["is_critical"]


def _standardized(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.preprocessing import StandardScaler

    if dataset == "breast_cancer":
        bunch = load_breast_cancer()
        labels = bunch.target
    else:
        bunch = load_digits()
        labels = bunch.target if dataset == "digits" else (bunch.target >= 5).astype(int)
    return StandardScaler().fit_transform(bunch.data), labels


@pytest.mark.parametrize("dataset", builtin.LOGISTIC_DATASETS)
def test_logistic_regression_matches_numpy(dataset):
    l2 = 0.03
    problem = PROBLEMS["logistic_regression"](dataset=dataset, l2=l2)
    x, y = _standardized(dataset)
    n, d = x.shape
    assert problem.init_params["w"].shape == (d,) and problem.init_params["b"].shape == ()
    assert float(problem.objective(problem.init_params)) == pytest.approx(math.log(2.0), rel=RTOL)
    rng = np.random.default_rng(3)
    w, b = 0.3 * rng.normal(size=d), 0.2
    z = x @ w + b
    expected = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    np.testing.assert_allclose(problem.objective(params), expected, rtol=RTOL)
    accuracy = float(problem.metrics(params)["accuracy"])
    assert accuracy == pytest.approx(np.mean((z > 0) == (y == 1)), rel=RTOL)
    # The model is linear in the params, so the generalized Gauss–Newton product is
    # the Hessian product (the reason Gauss–Newton applies exactly).
    v = {"w": jnp.asarray(rng.normal(size=d)), "b": jnp.asarray(1.0)}
    objective = problem.objective
    ggn = jax.jit(lambda p, v: nj.ggn_vp(objective.model_fn, objective.output_loss_fn, p, v))(
        params, v
    )
    hess = jax.jit(lambda p, v: nj.hvp(objective, p, v))(params, v)
    for a, e in zip(leaves(ggn), leaves(hess), strict=True):
        np.testing.assert_allclose(a, e, rtol=GGN_RTOL, atol=1e-14)


def test_mlp_digits_matches_numpy_and_key():
    hidden, l2 = 5, 1e-3
    problem = PROBLEMS["mlp_digits"](key=KEY, hidden=hidden, l2=l2)
    p = {k: np.asarray(v) for k, v in problem.init_params.items()}
    assert p["W1"].shape == (64, hidden) and p["W2"].shape == (hidden, 10)
    np.testing.assert_array_equal(p["b1"], 0.0)
    # Glorot-normal scale, loosely: sample std within 20% of sqrt(2 / (fan_in + fan_out)).
    assert np.std(p["W1"]) == pytest.approx(math.sqrt(2.0 / (64 + hidden)), rel=0.2)
    x, y = _standardized("digits")
    rng = np.random.default_rng(4)
    p["b1"], p["b2"] = rng.normal(size=hidden), rng.normal(size=10)
    logits = np.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    xent = np.mean(scipy.special.logsumexp(logits, axis=1) - logits[np.arange(len(y)), y])
    expected = xent + 0.5 * l2 * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
    params = {k: jnp.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(problem.objective(params), expected, rtol=RTOL)
    accuracy = np.mean(np.argmax(logits, axis=1) == y)
    assert float(problem.metrics(params)["accuracy"]) == pytest.approx(accuracy, rel=RTOL)
    # All randomness comes from the key.
    again = PROBLEMS["mlp_digits"](key=KEY, hidden=hidden, l2=l2)
    other = PROBLEMS["mlp_digits"](key=jax.random.PRNGKey(7), hidden=hidden, l2=l2)
    np.testing.assert_array_equal(again.init_params["W1"], problem.init_params["W1"])
    assert not np.allclose(other.init_params["W1"], problem.init_params["W1"])


@pytest.mark.parametrize("dataset", ["Misra1a", "Chwirut2", "BoxBOD", "Thurber", "Nelson"])
def test_nist_objective_at_certified_params(dataset):
    reference = nist.load(dataset)
    for start in (1, 2):
        problem = PROBLEMS["nist"](dataset=dataset.lower(), start=start)
        np.testing.assert_array_equal(problem.init_params, reference.starts[start - 1])
    certified = jnp.asarray(reference.certified_params)
    np.testing.assert_allclose(
        problem.objective(certified), reference.certified_rss / 2.0, rtol=NIST_RTOL
    )
    assert problem.target_loss == pytest.approx(reference.certified_rss / 2.0, rel=1e-5)
    report = problem.report(certified)
    assert report["dataset"] == dataset
    assert report["lre"] == [reference.certified_digits] * reference.num_params
    assert report["rss"] == pytest.approx(reference.certified_rss, rel=NIST_RTOL)
    assert report["rss_lre"] >= 8.0
    assert report["certified_params"] == reference.certified_params.tolist()
    start_report = problem.report(problem.init_params)
    assert start_report["min_lre"] < 4.0 and start_report["rss"] > reference.certified_rss


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("nist", {"dataset": "Misra9z"}, ["Misra9z", "valid choices", "Misra1a", "Thurber"]),
        ("nist", {"start": 3}, ["start", "1, 2", "3"]),
        ("nist", {"start": 0}, ["start", "1, 2"]),
        ("logistic_regression", {"dataset": "iris"}, ["iris", "breast_cancer", "digits_binary"]),
        ("logistic_regression", {"l2": -1.0}, ["l2", ">= 0"]),
        ("rosenbrock", {"dim": 1}, ["dim", ">= 2"]),
        ("saddle", {"quartic": -0.5}, ["quartic"]),
        ("curve_fits", {"num_points": 3}, ["num_points", ">= 4"]),
        ("mlp_digits", {"hidden": 0}, ["hidden", ">= 1"]),
        ("mlp_spectrum", {"num_eigenvalues": 0}, ["num_eigenvalues"]),
    ],
)
def test_bad_hyperparameters(name, kwargs, words):
    builder = PROBLEMS[name]
    if takes_key(builder):
        kwargs = {**kwargs, "key": KEY}
    with pytest.raises(ValueError) as info:
        builder(**kwargs)
    message = str(info.value)
    assert message.startswith(name)
    for word in words:
        assert word in message, (word, message)


def test_curve_fits_batch():
    num_fits, num_points, noise = 6, 15, 0.1
    problem = PROBLEMS["curve_fits"](key=KEY, num_fits=num_fits, num_points=num_points, noise=noise)
    assert problem.batch_size == num_fits and problem.init_params.shape == (num_fits, 4)
    assert problem.data["t"].shape == problem.data["y"].shape == (num_fits, num_points)
    t = np.asarray(problem.data["t"])
    np.testing.assert_allclose(t[0], np.linspace(0.0, 4.0, num_points), rtol=RTOL)
    theta = np.asarray(problem.init_params)
    a, b, c, d = (theta[:, i : i + 1] for i in range(4))
    residual = a * np.exp(-b * t) + c * np.sin(d * t) - np.asarray(problem.data["y"])
    expected = 0.5 * np.sum(residual**2, axis=1)
    np.testing.assert_allclose(value_at(problem, problem.init_params), expected, rtol=RTOL)
    # Randomness only from the key.
    same = PROBLEMS["curve_fits"](key=KEY, num_fits=num_fits, num_points=num_points, noise=noise)
    np.testing.assert_array_equal(same.data["y"], problem.data["y"])
    other = PROBLEMS["curve_fits"](key=jax.random.PRNGKey(5), num_fits=num_fits)
    assert not np.allclose(other.init_params[:num_fits], problem.init_params)
    report = problem.report(problem.init_params)
    assert report["num_fits"] == num_fits
    assert report["median_loss"] == pytest.approx(np.median(expected), rel=RTOL)
    assert report["max_loss"] == pytest.approx(np.max(expected), rel=RTOL)
    assert report["fraction_converged"] == 0.0
    assert report["expected_noise_loss"] == pytest.approx(0.5 * num_points * noise**2)
    with pytest.raises(ValueError, match="batch"):
        problem.report(problem.init_params[0])


def test_curve_fits_noise_free_truth_is_recoverable():
    # Without noise the data are exact, so a Gauss–Newton-type solve from the nearby
    # starts should reach zero loss, and the report then counts them converged.
    problem = PROBLEMS["curve_fits"](key=KEY, num_fits=4, noise=0.0, start_spread=0.05)
    solve = jax.vmap(
        lambda x, data: nj.least_squares(problem.objective.residual_fn, x, args=(data,)).params
    )
    fitted = solve(problem.init_params, problem.data)
    report = problem.report(fitted)
    assert report["max_loss"] < 1e-20
    assert report["fraction_converged"] == 1.0
    assert report["median_param_rel_error"] < 1e-8


def test_spectrum_report_and_plot(tmp_path):
    problem = build("mlp_spectrum")
    assert isinstance(problem.objective, nj.CompositeObjective)
    params = problem.init_params
    report = initial_report("mlp_spectrum")
    hessian = jax.jit(nj.hessian_matrix, static_argnums=0)(problem.objective, params)
    dense = np.linalg.eigvalsh(np.asarray(hessian))
    top = report["top_eigenvalues"]
    assert len(top) == 2 and top[0] >= top[1]
    assert top[0] == pytest.approx(dense[-1], rel=EIG_RTOL)
    # Ritz values lie inside the spectrum (Cauchy interlacing).
    assert dense[0] - 1e-10 <= report["min_eigenvalue"] <= dense[-1] + 1e-10
    assert np.isfinite(report["trace_estimate"])
    json.dumps(report, allow_nan=False)
    paths = problem.plot({"newton": params, "adam lr=1e-3": params}, tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "spectral_density_newton.png",
        "spectral_density_adam_lr_1e-3.png",
    ]
    import matplotlib.image

    image = matplotlib.image.imread(paths[0])
    assert image.shape == (400, 600, 4)
    assert np.ptp(image[..., :3]) > 0.5  # something was drawn


def test_missing_sklearn_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for name in ["logistic_regression", "mlp_digits"]:
        builder = PROBLEMS[name]
        kwargs = {"key": KEY} if takes_key(builder) else {}
        with pytest.raises(ImportError, match=r'pip install "newtonjax\[experiments\]"'):
            builder(**kwargs)
