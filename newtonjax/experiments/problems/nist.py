"""NIST StRD nonlinear least-squares reference problems.

The 27 nonlinear regression data sets of the NIST Statistical Reference Datasets
(StRD) project, each with two starting points, certified parameter values and
standard deviations given to 11 significant digits, and a certified residual sum of
squares. A problem asks for

.. math::

    \\min_b \\; \\sum_i \\bigl(f(b, x_i) - y_i\\bigr)^2,

with the model :math:`f` given in the data file's "Model:" section. The ``.dat``
files ship unchanged in ``experiments/data/nist_strd/`` and are parsed here; the 27
models are transcribed by hand as JAX functions (``jnp`` operations only, so they
run in float32 and float64 and under ``jax.jit``, ``jax.vmap`` and ``jax.grad``).

Accuracy is scored with the log relative error (LRE) of McCullough (1998): the
number of correct significant digits of an estimate, capped at the number of
digits of the certified value.

Nelson is the one problem whose response is transformed: its model is
``log[y] = b1 - b2*x1 * exp[-b3*x2]``, so :attr:`NistProblem.y` holds ``log(y)`` of
the file's column (the certified values refer to that fit), and ``x`` has the two
predictor columns ``(x1, x2)``.

References:
    NIST StRD, Nonlinear Regression,
    https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml
    McCullough, B. D. (1998). Assessing the reliability of statistical software:
    Part I. The American Statistician 52(4), 358-366 (the LRE, §2).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DATA_DIR",
    "DIFFICULTIES",
    "MODELS",
    "PROBLEMS",
    "NistProblem",
    "load",
    "load_all",
    "log_relative_error",
    "min_lre",
    "names",
]

Array = jax.Array

#: Folder holding the 27 unchanged NIST ``.dat`` files.
DATA_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "nist_strd"

#: The three NIST levels of difficulty.
DIFFICULTIES: tuple[str, ...] = ("lower", "average", "higher")


# ---------------------------------------------------------------------------
# Models, transcribed from each file's "Model:" section. ``b`` is the parameter
# vector (b1 is ``b[0]``); ``x`` is the predictor, shape (n,), or for Nelson the
# predictor matrix, shape (n, 2). Python scalars keep the dtype of ``b`` and ``x``.
# ---------------------------------------------------------------------------


def _bennett5(b: Array, x: Array) -> Array:
    # y = b1 * (b2+x)**(-1/b3)
    return b[0] * (b[1] + x) ** (-1.0 / b[2])


def _boxbod(b: Array, x: Array) -> Array:
    # y = b1*(1-exp[-b2*x])
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def _chwirut(b: Array, x: Array) -> Array:
    # y = exp[-b1*x]/(b2+b3*x)   (Chwirut1 and Chwirut2)
    return jnp.exp(-b[0] * x) / (b[1] + b[2] * x)


def _danwood(b: Array, x: Array) -> Array:
    # y = b1*x**b2
    return b[0] * x ** b[1]


def _enso(b: Array, x: Array) -> Array:
    # y = b1 + b2*cos( 2*pi*x/12 ) + b3*sin( 2*pi*x/12 )
    #        + b5*cos( 2*pi*x/b4 ) + b6*sin( 2*pi*x/b4 )
    #        + b8*cos( 2*pi*x/b7 ) + b9*sin( 2*pi*x/b7 )
    t = 2.0 * jnp.pi * x
    return (
        b[0]
        + b[1] * jnp.cos(t / 12.0)
        + b[2] * jnp.sin(t / 12.0)
        + b[4] * jnp.cos(t / b[3])
        + b[5] * jnp.sin(t / b[3])
        + b[7] * jnp.cos(t / b[6])
        + b[8] * jnp.sin(t / b[6])
    )


def _eckerle4(b: Array, x: Array) -> Array:
    # y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]
    return (b[0] / b[1]) * jnp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _gauss(b: Array, x: Array) -> Array:
    # y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 )
    #                     + b6*exp( -(x-b7)**2 / b8**2 )   (Gauss1, Gauss2, Gauss3)
    return (
        b[0] * jnp.exp(-b[1] * x)
        + b[2] * jnp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * jnp.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _rational_cubic(b: Array, x: Array) -> Array:
    # y = (b1 + b2*x + b3*x**2 + b4*x**3) / (1 + b5*x + b6*x**2 + b7*x**3)
    # (Hahn1 and Thurber)
    numerator = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    denominator = 1.0 + b[4] * x + b[5] * x**2 + b[6] * x**3
    return numerator / denominator


def _kirby2(b: Array, x: Array) -> Array:
    # y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)
    return (b[0] + b[1] * x + b[2] * x**2) / (1.0 + b[3] * x + b[4] * x**2)


def _lanczos(b: Array, x: Array) -> Array:
    # y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)   (Lanczos1, 2, 3)
    return b[0] * jnp.exp(-b[1] * x) + b[2] * jnp.exp(-b[3] * x) + b[4] * jnp.exp(-b[5] * x)


def _mgh09(b: Array, x: Array) -> Array:
    # y = b1*(x**2+x*b2) / (x**2+x*b3+b4)
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _mgh10(b: Array, x: Array) -> Array:
    # y = b1 * exp[b2/(x+b3)]
    return b[0] * jnp.exp(b[1] / (x + b[2]))


def _mgh17(b: Array, x: Array) -> Array:
    # y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]
    return b[0] + b[1] * jnp.exp(-x * b[3]) + b[2] * jnp.exp(-x * b[4])


def _misra1a(b: Array, x: Array) -> Array:
    # y = b1*(1-exp[-b2*x])
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def _misra1b(b: Array, x: Array) -> Array:
    # y = b1 * (1-(1+b2*x/2)**(-2))
    return b[0] * (1.0 - (1.0 + b[1] * x / 2.0) ** (-2.0))


def _misra1c(b: Array, x: Array) -> Array:
    # y = b1 * (1-(1+2*b2*x)**(-.5))
    return b[0] * (1.0 - (1.0 + 2.0 * b[1] * x) ** (-0.5))


def _misra1d(b: Array, x: Array) -> Array:
    # y = b1*b2*x*((1+b2*x)**(-1))
    return b[0] * b[1] * x * (1.0 + b[1] * x) ** (-1.0)


def _nelson(b: Array, x: Array) -> Array:
    # log[y] = b1 - b2*x1 * exp[-b3*x2];  x[..., 0] = x1 (time), x[..., 1] = x2 (temperature)
    x1 = x[..., 0]
    x2 = x[..., 1]
    return b[0] - b[1] * x1 * jnp.exp(-b[2] * x2)


def _rat42(b: Array, x: Array) -> Array:
    # y = b1 / (1+exp[b2-b3*x])
    return b[0] / (1.0 + jnp.exp(b[1] - b[2] * x))


def _rat43(b: Array, x: Array) -> Array:
    # y = b1 / ((1+exp[b2-b3*x])**(1/b4))
    return b[0] / (1.0 + jnp.exp(b[1] - b[2] * x)) ** (1.0 / b[3])


def _roszman1(b: Array, x: Array) -> Array:
    # y = b1 - b2*x - arctan[b3/(x-b4)]/pi
    return b[0] - b[1] * x - jnp.arctan(b[2] / (x - b[3])) / jnp.pi


#: Model function of each problem, ``model(b, x) -> predicted response``.
MODELS: Mapping[str, Callable[[Array, Array], Array]] = {
    "Bennett5": _bennett5,
    "BoxBOD": _boxbod,
    "Chwirut1": _chwirut,
    "Chwirut2": _chwirut,
    "DanWood": _danwood,
    "ENSO": _enso,
    "Eckerle4": _eckerle4,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "Gauss3": _gauss,
    "Hahn1": _rational_cubic,
    "Kirby2": _kirby2,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Lanczos3": _lanczos,
    "MGH09": _mgh09,
    "MGH10": _mgh10,
    "MGH17": _mgh17,
    "Misra1a": _misra1a,
    "Misra1b": _misra1b,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Nelson": _nelson,
    "Rat42": _rat42,
    "Rat43": _rat43,
    "Roszman1": _roszman1,
    "Thurber": _rational_cubic,
}

# Problems whose regression response is a transform of the file's y column.
_RESPONSE_TRANSFORMS: Mapping[str, str] = {"Nelson": "log"}


# ---------------------------------------------------------------------------
# The problem record.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class NistProblem:
    """One NIST StRD nonlinear least-squares problem, parsed from its ``.dat`` file.

    All arrays are read-only float64 NumPy arrays.

    Attributes:
        name: the NIST name, e.g. ``"Misra1a"``.
        difficulty: ``"lower"``, ``"average"`` or ``"higher"``.
        x: predictors, shape ``(n,)``, or ``(n, k)`` with k predictor columns (Nelson).
        y: the regression response, shape ``(n,)``; for Nelson ``log`` of the file's y.
        starts: the two NIST starting points ("Start 1", "Start 2"), each ``(p,)``.
        certified_params: certified parameter values, shape ``(p,)``.
        certified_std: certified standard deviations of the parameters, ``(p,)``.
        certified_rss: certified residual sum of squares.
        certified_residual_std: certified residual standard deviation.
        certified_digits: significant digits of the certified values (11).
        degrees_of_freedom: ``n - p``.
        num_params: ``p``.
        model: ``model(b, x)``, the JAX model function (``b`` of shape ``(p,)``).
        model_formula: the model as written in the file, e.g.
            ``"y = b1*(1-exp[-b2*x]) + e"``; statements are joined by ``"; "``
            (Roszman1: ``"pi = 3.14...; y = ..."``).
        response_transform: ``"identity"``, or ``"log"`` when ``y`` is ``log`` of the data.
        path: the ``.dat`` file this was read from.
    """

    name: str
    difficulty: str
    x: np.ndarray
    y: np.ndarray
    starts: tuple[np.ndarray, np.ndarray]
    certified_params: np.ndarray
    certified_std: np.ndarray
    certified_rss: float
    certified_residual_std: float
    certified_digits: int
    degrees_of_freedom: int
    num_params: int
    model: Callable[[Array, Array], Array] = dataclasses.field(repr=False)
    model_formula: str = ""
    response_transform: str = "identity"
    path: Path | None = dataclasses.field(default=None, repr=False)

    @property
    def num_observations(self) -> int:
        """Number of data points ``n``."""
        return int(self.y.shape[0])

    @functools.cached_property
    def residual_fn(self) -> Callable[[Array], Array]:
        """The residual ``r(b) = model(b, x) - y``, shape ``(n,)``.

        The data are cast to the floating dtype of ``b``, so a float32 ``b`` gives a
        float32 residual even with ``jax_enable_x64`` on. The same function object is
        returned on every access, so ``jax.jit`` caches its traces.
        """
        model, x_data, y_data = self.model, self.x, self.y

        def residual(b: Array) -> Array:
            b = jnp.asarray(b)
            dtype = b.dtype if jnp.issubdtype(b.dtype, jnp.floating) else jnp.result_type(float)
            b = b.astype(dtype)
            return model(b, jnp.asarray(x_data, dtype)) - jnp.asarray(y_data, dtype)

        return residual

    def rss(self, b: Array) -> Array:
        """Residual sum of squares ``sum(r(b)**2)`` (NIST's objective, not ½‖r‖²)."""
        r = self.residual_fn(b)
        return jnp.sum(r * r)


# ---------------------------------------------------------------------------
# Parsing.
# ---------------------------------------------------------------------------

_LINES_RE = r"\(lines\s+(\d+)\s+to\s+(\d+)\)"
_PARAM_RE = re.compile(r"^\s*b(\d+)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_DIFFICULTY_RE = re.compile(r"\b(Lower|Average|Higher)\s+Level\s+of\s+Difficulty", re.I)


def _find_number(text: str, label: str, cast: Callable[[str], Any] = float) -> Any:
    match = re.search(rf"^{re.escape(label)}:\s*(\S+)\s*$", text, re.M)
    if match is None:
        raise ValueError(f"nist: no '{label}:' line")
    return cast(match.group(1))


def _line_range(text: str, label: str) -> tuple[int, int]:
    match = re.search(rf"{label}\s*{_LINES_RE}", text, re.I)
    if match is None:
        raise ValueError(f"nist: no '{label} (lines a to b)' entry in 'File Format'")
    return int(match.group(1)), int(match.group(2))


def _significant_digits(token: str) -> int:
    mantissa = re.split(r"[eE]", token)[0].lstrip("+-")
    return len(mantissa.replace(".", "").lstrip("0"))


def _model_formula(lines: Sequence[str]) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith("Model:"))
    statements: list[str] = []
    for line in lines[start + 2 :]:
        stripped = " ".join(line.split())
        if stripped.lower().startswith("starting values"):
            break
        if not stripped:
            continue
        # A line starting with an operator, or following one ending with "/",
        # continues the previous statement (ENSO, Gauss*, Hahn1, Kirby2, Thurber).
        if statements and (stripped[0] in "+-*/" or statements[-1].endswith("/")):
            statements[-1] += " " + stripped
        else:
            statements.append(stripped)
    return "; ".join(statements)


def _parse(name: str, path: Path) -> NistProblem:
    text = path.read_text(encoding="ascii")
    lines = text.splitlines()  # lines[k - 1] is the file's line k

    start_first, start_last = _line_range(text, "Starting Values")
    data_first, data_last = _line_range(text, "Data")

    starts1, starts2, params, stds = [], [], [], []
    digits = []
    for expected, line in enumerate(lines[start_first - 1 : start_last], start=1):
        match = _PARAM_RE.match(line)
        if match is None or int(match.group(1)) != expected:
            raise ValueError(f"nist: {path.name}: bad parameter line {line!r}")
        starts1.append(float(match.group(2)))
        starts2.append(float(match.group(3)))
        params.append(float(match.group(4)))
        stds.append(float(match.group(5)))
        digits.append(_significant_digits(match.group(4)))
    num_params = len(params)

    declared = re.search(r"^\s*(\d+)\s+Parameters\s+\(b1", text, re.M)
    if declared is None or int(declared.group(1)) != num_params:
        raise ValueError(f"nist: {path.name}: parameter count disagrees with 'Model:'")

    header = lines[data_first - 2].split()
    if not header or header[0] != "Data:" or header[1] != "y":
        raise ValueError(f"nist: {path.name}: unexpected data header {lines[data_first - 2]!r}")
    columns = header[1:]
    table = np.array(
        [[float(v) for v in line.split()] for line in lines[data_first - 1 : data_last]],
        dtype=np.float64,
    )
    if table.ndim != 2 or table.shape[1] != len(columns):
        raise ValueError(f"nist: {path.name}: data rows do not match header {columns}")
    num_obs = _find_number(text, "Number of Observations", int)
    if table.shape[0] != num_obs:
        raise ValueError(f"nist: {path.name}: {table.shape[0]} rows, expected {num_obs}")

    y = table[:, 0]
    x = table[:, 1] if table.shape[1] == 2 else table[:, 1:]
    transform = _RESPONSE_TRANSFORMS.get(name, "identity")
    if transform == "log":
        y = np.log(y)

    difficulty = _DIFFICULTY_RE.search(text)
    if difficulty is None:
        raise ValueError(f"nist: {path.name}: no 'Level of Difficulty' line")

    def frozen(values: Any) -> np.ndarray:
        array = np.array(values, dtype=np.float64)
        array.setflags(write=False)
        return array

    return NistProblem(
        name=name,
        difficulty=difficulty.group(1).lower(),
        x=frozen(x),
        y=frozen(y),
        starts=(frozen(starts1), frozen(starts2)),
        certified_params=frozen(params),
        certified_std=frozen(stds),
        certified_rss=_find_number(text, "Residual Sum of Squares"),
        certified_residual_std=_find_number(text, "Residual Standard Deviation"),
        certified_digits=min(digits),
        # n - p rather than the file's "Degrees of Freedom" line: Rat43.dat prints 9
        # there, while its certified residual standard deviation uses 15 - 4 = 11.
        degrees_of_freedom=num_obs - num_params,
        num_params=num_params,
        model=MODELS[name],
        model_formula=_model_formula(lines),
        response_transform=transform,
        path=path,
    )


# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    for known in MODELS:
        if known.lower() == str(name).lower():
            return known
    raise ValueError(f"nist: unknown problem {name!r}; valid choices: {sorted(MODELS)}")


@functools.cache
def _load_canonical(name: str) -> NistProblem:
    return _parse(name, DATA_DIR / f"{name}.dat")


def load(name: str) -> NistProblem:
    """Loads one NIST StRD problem by name (case-insensitive); cached.

    Args:
        name: one of :func:`names`, e.g. ``"Misra1a"``.

    Returns:
        The parsed :class:`NistProblem`.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.

    Examples:
        >>> problem = load("Misra1a")
        >>> problem.difficulty, problem.num_params, problem.x.shape
        ('lower', 2, (14,))
        >>> float(problem.rss(problem.certified_params)) > 0
        True
    """
    return _load_canonical(_canonical_name(name))


def names(difficulty: str | None = None) -> list[str]:
    """Sorted names of the 27 problems, or of those with the given difficulty.

    Args:
        difficulty: ``None`` for all, or one of ``"lower"``, ``"average"``, ``"higher"``.

    Returns:
        Problem names, ``sorted`` (code-point order, so ``"ENSO"`` precedes
        ``"Eckerle4"``).

    Examples:
        >>> names("lower")
        ['Chwirut1', 'Chwirut2', 'DanWood', 'Gauss1', 'Gauss2', 'Lanczos3', 'Misra1a', 'Misra1b']
        >>> len(names())
        27
    """
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise ValueError(
            f"nist.names: difficulty must be one of {list(DIFFICULTIES)} or None, "
            f"got {difficulty!r}"
        )
    selected = [
        n for n in MODELS if difficulty is None or _load_canonical(n).difficulty == difficulty
    ]
    return sorted(selected)


def load_all(difficulty: str | None = None) -> dict[str, NistProblem]:
    """All problems (of one difficulty), keyed by name in :func:`names` order."""
    return {n: _load_canonical(n) for n in names(difficulty)}


class _Problems(Mapping[str, NistProblem]):
    """Read-only mapping name -> :class:`NistProblem`, loading files on first access."""

    def __getitem__(self, name: str) -> NistProblem:
        if name not in MODELS:
            raise KeyError(name)
        return _load_canonical(name)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(MODELS)

    def __repr__(self) -> str:
        return f"nist.PROBLEMS({names()})"


#: Registry of the 27 problems: ``PROBLEMS["Misra1a"]`` is ``load("Misra1a")``.
PROBLEMS: Mapping[str, NistProblem] = _Problems()


# ---------------------------------------------------------------------------
# Accuracy.
# ---------------------------------------------------------------------------


def log_relative_error(estimate: Any, certified: Any, digits: int = 11) -> np.ndarray:
    """Log relative error (LRE): the number of correct significant digits.

    .. math::

        \\mathrm{LRE}(q, c) = -\\log_{10} \\frac{|q - c|}{|c|}
        \\quad (c \\ne 0), \\qquad -\\log_{10} |q| \\quad (c = 0),

    clipped to ``[0, digits]``: an exact match (or one closer than the certified
    value's own precision) scores ``digits``; an estimate off by 100% or more, or
    a NaN/inf estimate, scores 0. Computed on the host in float64, elementwise.

    Args:
        estimate: estimated values, any array-like (NumPy or JAX), broadcastable
            against ``certified``.
        certified: certified values.
        digits: significant digits of the certified values (11 for NIST StRD).

    Returns:
        Float64 NumPy array of LREs, broadcast shape of the inputs.

    References:
        McCullough, B. D. (1998). Assessing the reliability of statistical software:
        Part I. The American Statistician 52(4), §2.

    Examples:
        >>> log_relative_error([1.001, 1.0, 2.0], 1.0).round(6).tolist()
        [3.0, 11.0, 0.0]
    """
    if digits <= 0:
        raise ValueError(f"log_relative_error: digits must be positive, got {digits}")
    q = np.asarray(estimate, dtype=np.float64)
    c = np.asarray(certified, dtype=np.float64)
    q, c = np.broadcast_arrays(q, c)
    error = np.abs(q - c)
    scale = np.where(c == 0.0, 1.0, np.abs(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        lre = -np.log10(error / scale)
    lre = np.where(error == 0.0, float(digits), lre)
    lre = np.where(np.isfinite(q), lre, 0.0)
    return np.clip(lre, 0.0, float(digits)) + 0.0  # + 0.0 turns -0.0 into 0.0


def min_lre(estimate: Any, certified: Any, digits: int = 11) -> float:
    """Smallest LRE over all entries: the digits that every parameter gets right.

    Examples:
        >>> round(min_lre([1.001, 2.0], [1.0, 2.0]), 6)
        3.0
    """
    lre = log_relative_error(estimate, certified, digits)
    return float(np.min(lre)) if lre.size else math.nan
