"""Tests of the NIST StRD problem module ``newtonjax.experiments.problems.nist``.

The certified values in each file are the independent reference: the residual sum of
squares at the certified parameters must reproduce the certified RSS, and the
certified parameters must be a stationary point of the transcribed model. A wrong
parser (swapped columns, missing rows, wrong parameter order) or a wrong model
transcription fails both.
"""

import jax

jax.config.update("jax_enable_x64", True)

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.optimize  # noqa: E402

from newtonjax.experiments.problems import nist  # noqa: E402

# Tolerances, in one place.
# The certified RSS is printed to 11 significant digits (rounding: 5e-11 relative);
# every problem reproduces it to < 5e-11 in float64, so 1e-9 leaves margin only for
# summation order.
RSS_RTOL = 1e-9
# The certified parameters b_c are rounded to 11 digits; at the exact minimizer b*
# the residual r* is orthogonal to range(J), so RSS(b_c) = RSS* + |J db|^2 + O(db^3)
# with |J db| <= sum_i |J_i| |db_i| =: bound. Only Lanczos1 needs this slack (its
# certified RSS, 1.4e-25, is far below what 11-digit parameters can reproduce);
# every other problem is held to RSS_RTOL alone. See test_rss_at_certified_params.
ROUNDING_SLACK = 2.0
# Stationarity: |J_i^T r(b_c)| = |J_i^T J db| <= |J_i| * bound, so the cosine between
# column J_i and the residual is at most bound / |r| (twice that for linearization
# slack), plus a float64 floor.
STATIONARITY_FLOOR = 1e-9
VMAP_RTOL = 1e-12
SCIPY_MIN_LRE = 6.0
FLOAT32_RSS_RTOL = 1e-2

ALL_NAMES = [
    "Bennett5", "BoxBOD", "Chwirut1", "Chwirut2", "DanWood", "ENSO", "Eckerle4",
    "Gauss1", "Gauss2", "Gauss3", "Hahn1", "Kirby2", "Lanczos1", "Lanczos2", "Lanczos3",
    "MGH09", "MGH10", "MGH17", "Misra1a", "Misra1b", "Misra1c", "Misra1d", "Nelson",
    "Rat42", "Rat43", "Roszman1", "Thurber",
]  # fmt: skip
# Hand-copied from the "Level of Difficulty" line of each file (checked with grep).
EXPECTED_DIFFICULTY = {
    "lower": [
        "Chwirut1", "Chwirut2", "DanWood", "Gauss1", "Gauss2", "Lanczos3", "Misra1a",
        "Misra1b",
    ],
    "average": [
        "ENSO", "Gauss3", "Hahn1", "Kirby2", "Lanczos1", "Lanczos2", "MGH17", "Misra1c",
        "Misra1d", "Nelson", "Roszman1",
    ],
    "higher": [
        "Bennett5", "BoxBOD", "Eckerle4", "MGH09", "MGH10", "Rat42", "Rat43", "Thurber",
    ],
}  # fmt: skip
# (num_params, num_observations), hand-copied from the files.
EXPECTED_SIZES = {
    "Bennett5": (3, 154), "BoxBOD": (2, 6), "Chwirut1": (3, 214), "Chwirut2": (3, 54),
    "DanWood": (2, 6), "ENSO": (9, 168), "Eckerle4": (3, 35), "Gauss1": (8, 250),
    "Gauss2": (8, 250), "Gauss3": (8, 250), "Hahn1": (7, 236), "Kirby2": (5, 151),
    "Lanczos1": (6, 24), "Lanczos2": (6, 24), "Lanczos3": (6, 24), "MGH09": (4, 11),
    "MGH10": (3, 16), "MGH17": (5, 33), "Misra1a": (2, 14), "Misra1b": (2, 14),
    "Misra1c": (2, 14), "Misra1d": (2, 14), "Nelson": (3, 128), "Rat42": (3, 9),
    "Rat43": (4, 15), "Roszman1": (4, 25), "Thurber": (7, 37),
}  # fmt: skip


def _rounding_bound(problem):
    """Upper bound on |J db| for db the rounding of the certified parameters."""
    b = jnp.asarray(problem.certified_params)
    jac = np.asarray(jax.jacfwd(problem.residual_fn)(b))
    exponent = np.floor(np.log10(np.abs(problem.certified_params)))
    half_unit = 0.5 * 10.0 ** (exponent - (problem.certified_digits - 1))
    return float(np.sum(np.linalg.norm(jac, axis=0) * half_unit)), jac


# ---------------------------------------------------------------------------
# Registry and parsing.
# ---------------------------------------------------------------------------


def test_names_and_difficulty_counts():
    assert nist.names() == sorted(ALL_NAMES)
    assert len(nist.names()) == 27
    for difficulty, expected in EXPECTED_DIFFICULTY.items():
        assert nist.names(difficulty) == sorted(expected)
    assert [len(nist.names(d)) for d in nist.DIFFICULTIES] == [8, 11, 8]
    assert nist.load("Misra1a").difficulty == "lower"
    assert nist.load("MGH09").difficulty == "higher"
    assert set(nist.PROBLEMS) == set(ALL_NAMES)
    assert len(nist.PROBLEMS) == 27
    assert nist.PROBLEMS["Rat43"] is nist.load("rat43")
    assert list(nist.load_all("higher")) == nist.names("higher")


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="valid choices"):
        nist.load("Misra2")
    with pytest.raises(ValueError, match="difficulty"):
        nist.names("hard")
    with pytest.raises(KeyError):
        nist.PROBLEMS["misra1a"]  # the mapping is exact; load() is case-insensitive


@pytest.mark.parametrize("name", ALL_NAMES)
def test_shapes_and_fields(name):
    problem = nist.load(name)
    num_params, num_obs = EXPECTED_SIZES[name]
    assert problem.name == name
    assert problem.num_params == num_params
    assert problem.num_observations == num_obs
    assert problem.degrees_of_freedom == num_obs - num_params
    assert problem.certified_digits == 11
    assert problem.path.name == f"{name}.dat"
    assert len(problem.starts) == 2
    for array in (*problem.starts, problem.certified_params, problem.certified_std):
        assert array.shape == (num_params,)
        assert array.dtype == np.float64
        assert not array.flags.writeable
    assert problem.y.shape == (num_obs,)
    expected_x_shape = (num_obs, 2) if name == "Nelson" else (num_obs,)
    assert problem.x.shape == expected_x_shape
    assert np.all(problem.certified_std > 0)
    assert problem.certified_rss > 0
    # Residual standard deviation = sqrt(RSS / dof), both as printed to 11 digits.
    np.testing.assert_allclose(
        problem.certified_residual_std,
        np.sqrt(problem.certified_rss / problem.degrees_of_freedom),
        rtol=1e-9,
    )
    response = "log[y] = " if name == "Nelson" else "y = "
    assert problem.model_formula.split("; ")[-1].startswith(response), problem.model_formula
    assert problem.model_formula.endswith(" + e")


def test_hand_copied_values():
    misra = nist.load("Misra1a")
    np.testing.assert_array_equal(misra.starts[0], [500.0, 1e-4])
    np.testing.assert_array_equal(misra.starts[1], [250.0, 5e-4])
    np.testing.assert_array_equal(misra.certified_params, [2.3894212918e02, 5.5015643181e-04])
    np.testing.assert_array_equal(misra.certified_std, [2.7070075241e00, 7.2668688436e-06])
    assert misra.certified_rss == 1.2455138894e-01
    assert (misra.x[0], misra.y[0]) == (77.6, 10.07)
    assert misra.model_formula == "y = b1*(1-exp[-b2*x]) + e"
    assert nist.load("Hahn1").model_formula == (
        "y = (b1+b2*x+b3*x**2+b4*x**3) / (1+b5*x+b6*x**2+b7*x**3) + e"
    )
    assert nist.load("Roszman1").model_formula.startswith("pi = 3.14159265358979")
    # Rat43.dat prints "Degrees of Freedom: 9" (15 observations, 4 parameters); its
    # certified residual standard deviation sqrt(RSS / 11) shows 11 is meant.
    assert nist.load("Rat43").degrees_of_freedom == 11

    nelson = nist.load("Nelson")
    assert nelson.response_transform == "log"
    assert nelson.starts[1][1] == 5e-9
    # First and last data rows: "15.00E0 1E0 180E0" and "1.20E0 64E0 275E0".
    np.testing.assert_array_equal(nelson.x[0], [1.0, 180.0])
    np.testing.assert_array_equal(nelson.x[-1], [64.0, 275.0])
    assert nelson.y[0] == np.log(15.0)
    assert nelson.y[-1] == np.log(1.2)

    roszman = nist.load("Roszman1")
    assert (roszman.y[0], roszman.x[0]) == (0.252429, -4868.68)
    assert (roszman.y[-1], roszman.x[-1]) == (0.624169, -464.17)
    assert (nist.load("Hahn1").y[-1], nist.load("Hahn1").x[-1]) == (20.935, 848.23)
    assert nist.load("ENSO").num_params == 9


# ---------------------------------------------------------------------------
# Certified values against the transcribed models.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_rss_at_certified_params(name):
    problem = nist.load(name)
    rss = float(problem.rss(problem.certified_params))
    r = np.asarray(problem.residual_fn(problem.certified_params))
    np.testing.assert_allclose(rss, np.sum(r**2), rtol=1e-14)
    if name != "Lanczos1":
        np.testing.assert_allclose(rss, problem.certified_rss, rtol=RSS_RTOL)
        return
    # Lanczos1 is the only problem where 11-digit parameters cannot reproduce the
    # certified RSS: its data are exact values of the model at (0.0951, 1, 0.8607, 3,
    # 1.5576, 5) rounded to 13 digits, so RSS* = 1.4e-25, while rounding the
    # parameters to 11 digits moves the residual by up to ~1e-10 (RSS ~4e-21 here).
    # The rounding slack bounds that move; a transcription error would give an RSS
    # many orders of magnitude above it.
    bound, _ = _rounding_bound(problem)
    slack = ROUNDING_SLACK * bound**2
    assert slack < 1e-19
    assert abs(rss - problem.certified_rss) <= RSS_RTOL * problem.certified_rss + slack, (
        rss,
        problem.certified_rss,
        slack,
    )


@pytest.mark.parametrize("name", ALL_NAMES)
def test_certified_params_are_stationary(name):
    # The gradient J^T r vanishes at the exact least-squares solution; at the rounded
    # certified parameters it is J^T J db, bounded column by column (see ROUNDING_SLACK).
    problem = nist.load(name)
    bound, jac = _rounding_bound(problem)
    r = np.asarray(problem.residual_fn(problem.certified_params))
    cosines = np.abs(jac.T @ r) / (np.linalg.norm(jac, axis=0) * np.linalg.norm(r))
    limit = 2.0 * bound / np.linalg.norm(r) + STATIONARITY_FLOOR
    assert np.all(cosines <= limit), (name, cosines, limit)


@pytest.mark.parametrize("name", ["Misra1a", "Chwirut2", "DanWood", "Lanczos3", "Gauss1"])
def test_scipy_levenberg_marquardt_stays_at_certified(name):
    problem = nist.load(name)
    residual = jax.jit(problem.residual_fn)
    jacobian = jax.jit(jax.jacfwd(problem.residual_fn))
    result = scipy.optimize.least_squares(
        lambda b: np.asarray(residual(b)),
        problem.certified_params,
        jac=lambda b: np.asarray(jacobian(b)),
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    assert nist.min_lre(result.x, problem.certified_params) >= SCIPY_MIN_LRE, (name, result.x)
    np.testing.assert_allclose(2.0 * result.cost, problem.certified_rss, rtol=1e-8)


# ---------------------------------------------------------------------------
# JAX transformations and dtypes.
# ---------------------------------------------------------------------------


class ResidualVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_residual_matches_numpy(self):
        # Misra1a written out with NumPy, independently of the module's model.
        problem = nist.load("Misra1a")
        b = problem.starts[1]
        expected = b[0] * (1.0 - np.exp(-b[1] * problem.x)) - problem.y
        got = self.variant(problem.residual_fn)(jnp.asarray(b))
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-13)

    @chex.variants(with_jit=True, without_jit=True)
    def test_nelson_matches_numpy(self):
        problem = nist.load("Nelson")
        b = problem.certified_params
        x1, x2 = problem.x[:, 0], problem.x[:, 1]
        y_file = np.exp(problem.y)
        expected = b[0] - b[1] * x1 * np.exp(-b[2] * x2) - np.log(y_file)
        got = self.variant(problem.residual_fn)(jnp.asarray(b))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_vmap_over_params_equals_loop(name):
    problem = nist.load(name)
    rng = np.random.default_rng(0)
    batch = np.stack(
        [
            *problem.starts,
            problem.certified_params,
            problem.certified_params * (1.0 + 1e-3 * rng.standard_normal(problem.num_params)),
        ]
    )
    batched = np.asarray(jax.jit(jax.vmap(problem.residual_fn))(jnp.asarray(batch)))
    looped = np.stack([np.asarray(problem.residual_fn(b)) for b in batch])
    assert batched.shape == (4, problem.num_observations)
    assert np.all(np.isfinite(looped))
    # jit fuses differently from eager execution, so residuals (model - y, with
    # cancellation near the fit) agree to rounding relative to the size of the
    # model values and the data, not to their own size.
    for got, expected in zip(batched, looped, strict=True):
        scale = float(np.max(np.abs(expected + problem.y)) + np.max(np.abs(problem.y)))
        np.testing.assert_allclose(got, expected, rtol=VMAP_RTOL, atol=VMAP_RTOL * scale)


def test_model_vmap_over_data_and_grad():
    problem = nist.load("Rat43")
    b = jnp.asarray(problem.certified_params)
    per_point = jax.vmap(problem.model, in_axes=(None, 0))(b, jnp.asarray(problem.x))
    np.testing.assert_allclose(per_point, problem.model(b, jnp.asarray(problem.x)), rtol=1e-14)
    grad = jax.grad(lambda p: problem.rss(p))(b)
    assert grad.shape == (4,) and np.all(np.isfinite(grad))


def test_residual_fn_is_cached():
    problem = nist.load("DanWood")
    assert problem.residual_fn is problem.residual_fn


@pytest.mark.parametrize("name", ["Misra1a", "Chwirut2", "DanWood", "Gauss1", "Nelson"])
def test_float32_smoke(name):
    problem = nist.load(name)
    b32 = jnp.asarray(problem.certified_params, dtype=jnp.float32)
    r = problem.residual_fn(b32)
    assert r.dtype == jnp.float32
    assert jax.jit(problem.residual_fn)(b32).dtype == jnp.float32
    rss = float(jnp.sum(r * r))
    np.testing.assert_allclose(rss, problem.certified_rss, rtol=FLOAT32_RSS_RTOL)


def test_integer_params_are_promoted():
    problem = nist.load("BoxBOD")
    r = problem.residual_fn(jnp.array([1, 1]))
    assert jnp.issubdtype(r.dtype, jnp.floating)
    np.testing.assert_allclose(r, 1.0 - np.exp(-problem.x) - problem.y, rtol=1e-14)


# ---------------------------------------------------------------------------
# Log relative error.
# ---------------------------------------------------------------------------


def test_log_relative_error_hand_computed():
    lre = nist.log_relative_error
    # -log10(|1.0001 - 1| / 1) = 4.
    np.testing.assert_allclose(lre(1.0001, 1.0), 4.0, rtol=1e-9)
    # -log10(0.0002 / 2.0002) = log10(10001) = 4.0000434...
    np.testing.assert_allclose(lre(-2.0, -2.0002), np.log10(10001.0), rtol=1e-12)
    # Relative error 2.5e-7: 7 - log10(2.5) = 6.60206.
    np.testing.assert_allclose(lre(400.0001, 400.0), 6.6020599913, rtol=1e-8)
    # Exact match and closer than 11 digits: capped at 11; custom cap.
    assert lre(3.8604055871, 3.8604055871) == 11.0
    assert lre(1.0 + 1e-14, 1.0) == 11.0
    assert lre(1.0, 1.0, digits=6) == 6.0
    # Off by more than 100%, NaN or inf: 0 correct digits.
    assert lre(5.0, 1.0) == 0.0
    assert lre(np.nan, 1.0) == 0.0
    assert lre(np.inf, 1.0) == 0.0
    # Certified zero: absolute error.
    np.testing.assert_allclose(lre(1e-5, 0.0), 5.0, rtol=1e-12)
    # Vectorized, and accepts JAX arrays.
    got = lre(jnp.array([1.001, 2.0, 10.0]), np.array([1.0, 2.0, 10.1]))
    assert got.shape == (3,) and got.dtype == np.float64
    np.testing.assert_allclose(got, [3.0, 11.0, np.log10(101.0)], rtol=1e-9)
    assert nist.min_lre([1.001, 2.0, 10.0], [1.0, 2.0, 10.1]) == pytest.approx(np.log10(101.0))
    with pytest.raises(ValueError, match="digits"):
        lre(1.0, 1.0, digits=0)


def test_lre_of_certified_values_is_the_cap():
    problem = nist.load("Eckerle4")
    np.testing.assert_array_equal(
        nist.log_relative_error(problem.certified_params, problem.certified_params), 11.0
    )
    # Start 1 of Eckerle4 has b3 = 500 against 451.54121844: about 1 correct digit.
    lre_start = nist.log_relative_error(problem.starts[0], problem.certified_params)
    np.testing.assert_allclose(lre_start[2], -np.log10(48.45878156 / 451.54121844), rtol=1e-8)
