r"""Curvature at the solution: parameter covariance and Laplace approximations.

Layer 6 (above the solve loops; imports curvature, linear algebra and tree helpers).
Both functions read the curvature of an objective at a point that a solve has
already found and turn it into uncertainty:

* :func:`parameter_covariance` — the classical nonlinear-regression covariance
  ``s² (JᵀJ)⁻¹`` with ``s² = ‖r‖²/(m − n)`` (Bates & Watts 1988, §2.3), the
  ``pcov`` of :func:`scipy.optimize.curve_fit` with ``absolute_sigma=False`` and the
  quantity whose square-rooted diagonal the NIST StRD certifies.
* :func:`laplace` — the Laplace approximation ``p(θ | D) ≈ N(θ*, P⁻¹)`` with
  precision ``P = C(θ*) + δ I``, where ``C`` is the Hessian or the generalized
  Gauss–Newton matrix of the negative log joint (MacKay 1992; Daxberger et al. 2021),
  stored in one of three structures (dense eigendecomposition, diagonal, or top-k
  eigenpairs by Lanczos plus the prior), with the evidence
  ``log p(D) ≈ −f(θ*) + (n/2) log 2π − ½ log det P`` and the linearized predictive
  (Immer, Korzepa & Bauer 2021).

Every structure is held as the eigenvalues of ``P`` in an orthonormal basis
(``V diag(μ) Vᵀ``; the diagonal structure uses the coordinate basis; the low-rank one
``U diag(μ) Uᵀ + μ_c (I − UUᵀ)``), so products with ``P`` and ``P⁻¹``, samples,
variances and ``log det P`` are all exact for the structure and cost ``O(n k)``.

Positive definiteness. Curvature eigenvalues within rounding of zero,
``|λ| ≤ τ = n ε max|λ|``, are read as zero. A precision eigenvalue ``μ = λ + δ ≤ 0``
(negative curvature the prior does not cover, or a flat direction with ``δ = 0``)
has no Gaussian: called eagerly, :func:`laplace` raises ``ValueError`` saying how
many there are and what to change; under a transformation (``jit``, ``vmap``,
``grad``) it repairs them instead — each such ``μ`` is replaced by ``max(δ, τ)``
(``τ = 1`` for an all-zero precision), i.e. the negative curvature is clipped to
zero — and reports the repair in ``num_clipped`` (how many) and ``clipped`` (the
total added), with ``finite`` false if the curvature held NaN or inf. Nothing is
silently NaN.

References:
  Bates, D. M. & Watts, D. G. (1988). Nonlinear Regression Analysis and Its
  Applications. Wiley, §2.3 (the linear approximation, ``s² (JᵀJ)⁻¹``).
  NIST Statistical Reference Datasets, Nonlinear Regression (certified standard
  deviations), https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml.
  MacKay, D. J. C. (1992). A practical Bayesian framework for backpropagation
  networks. Neural Computation 4(3), §4 (the evidence) and §6 (error bars).
  Daxberger, E. et al. (2021). Laplace Redux — effortless Bayesian deep learning.
  NeurIPS, §2–3 (Hessian structures, GGN, marginal likelihood for the prior).
  Immer, A., Korzepa, M. & Bauer, M. (2021). Improving predictions of Bayesian
  neural nets via local linearization. AISTATS, §3 (the linearized predictive).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from newtonjax import linalg
from newtonjax._checks import (
    check_finite_tree,
    check_float_tree,
    check_same_structure,
    check_scalar_output,
    is_concrete,
)
from newtonjax._curvature import (
    gauss_newton_operator,
    hessian_diag,
    hessian_matrix,
    hessian_operator,
    jacobian_matrix,
)
from newtonjax._objectives import CompositeObjective, LeastSquaresObjective
from newtonjax._tree import HIGHEST, PyTree, tree_ravel

__all__ = [
    "CURVATURES",
    "STRUCTURES",
    "LaplacePosterior",
    "LaplacePredictive",
    "laplace",
    "parameter_covariance",
]

#: Valid ``curvature`` arguments of :func:`laplace`.
CURVATURES: tuple[str, ...] = ("hessian", "ggn")
#: Valid ``structure`` arguments of :func:`laplace`.
STRUCTURES: tuple[str, ...] = ("full", "diag", "lowrank")

_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------ small helpers


def _bind(f: Callable, args: tuple) -> Callable:
    return f if not args else (lambda p: f(p, *args))


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=HIGHEST)


def _is_array_tree(tree: PyTree) -> bool:
    return all(
        isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, complex))
        for x in jax.tree.leaves(tree)
    )


def _maybe_jit(core: Callable, fun: Callable, *dynamic: Any, **static: Any):
    """``core(fun, *dynamic, **static)``, compiled once per (fun, static, shapes).

    Eager calls run as one compiled program instead of many small dispatches, and
    repeated calls with the same ``fun`` reuse it. Data that is not made of arrays
    (or an unhashable ``fun``) runs without the cache.
    """
    if not _hashable(fun) or not _is_array_tree(dynamic) or not is_concrete(dynamic):
        return core(fun, *dynamic, **static)
    return _jitted(core)(fun, *dynamic, **static)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _compiled(*static_argnums: int) -> Callable:
    """Run a posterior method as one compiled program, cached per structure and shapes.

    ``static_argnums`` count ``self`` as 0. Unhashable static arguments, non-array
    data or keyword arguments run the method as it is.
    """

    def decorate(method: Callable) -> Callable:
        jitted = jax.jit(method, static_argnums=static_argnums)

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            statics = [args[i - 1] for i in static_argnums if i - 1 < len(args)]
            dynamic = [a for i, a in enumerate(args, 1) if i not in static_argnums]
            if (
                kwargs
                or len(statics) < len(static_argnums)
                or not all(map(_hashable, statics))
                or not _is_array_tree(dynamic)
            ):
                return method(self, *args, **kwargs)
            return jitted(self, *args)

        return wrapper

    return decorate


@functools.cache
def _jitted(core: Callable) -> Callable:
    return jax.jit(core, static_argnums=0, static_argnames=_STATIC[core.__name__])


# ---------------------------------------------------------- parameter covariance


def parameter_covariance(
    residual_fn: Callable[..., PyTree], params: PyTree, *args: Any, **kwargs: Any
) -> jax.Array:
    r"""Covariance of least-squares parameter estimates, ``s² (JᵀJ)⁻¹``.

    For residuals ``r(θ) ∈ ℝᵐ`` at the least-squares estimate θ̂ with ``n``
    parameters, the linear approximation of nonlinear regression gives

    .. math::

       \widehat{\mathrm{Cov}}(\hat θ) = s^2 (J^T J)^{-1}, \qquad
       s^2 = \frac{\|r(\hat θ)\|^2}{m - n}, \qquad J = \partial r / \partial θ,

    the ``pcov`` of ``scipy.optimize.curve_fit(..., absolute_sigma=False)`` and the
    covariance behind the NIST StRD certified standard deviations
    (``sqrt(diag)``). ``(JᵀJ)⁻¹ = V Σ⁻² Vᵀ`` comes from the thin SVD ``J = U Σ Vᵀ``,
    so the condition number is never squared by forming ``JᵀJ``. Weighted fits pass
    residuals divided by their standard deviations.

    A Jacobian of numerical rank below ``n`` (a singular value at or below
    ``max(m, n) ε σ_max``, the threshold of ``curve_fit``) leaves some combination
    of parameters undetermined: called eagerly this raises ``ValueError``; under
    ``jit``/``vmap`` the result is filled with ``inf``, as ``curve_fit`` does, and so
    is a result whose residuals or Jacobian are not finite.

    Args:
      residual_fn: ``(params, *args, **kwargs) -> residuals`` (an array or pytree
        of ``m`` values); a :func:`least_squares_objective` is unwrapped to its
        residual function.
      params: the estimate θ̂ (any pytree of float arrays, ``n`` entries in all).
      *args: extra positional arguments of ``residual_fn`` (data).
      **kwargs: extra keyword arguments of ``residual_fn``.

    Returns:
      The ``(n, n)`` covariance in ``jax.flatten_util.ravel_pytree(params)`` order.

    Raises:
      TypeError: for non-float parameters or residuals.
      ValueError: for ``m <= n``, non-finite parameters, residuals or Jacobian, or
        (eagerly) a rank-deficient Jacobian.

    Examples:
      A straight line through four points; the standard errors of intercept and
      slope:

      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> x = jnp.array([0.0, 1.0, 2.0, 3.0])
      >>> y = jnp.array([0.1, 0.9, 2.1, 2.9])
      >>> residual = lambda p: p[0] + p[1] * x - y
      >>> cov = nj.parameter_covariance(residual, jnp.array([0.06, 0.96]))
      >>> [round(float(sd), 3) for sd in jnp.sqrt(jnp.diag(cov))]
      [0.106, 0.057]

    References:
      Bates & Watts (1988), Nonlinear Regression Analysis and Its Applications,
      §2.3.1; NIST StRD Nonlinear Regression (certified standard deviations);
      ``scipy.optimize.curve_fit`` (``pcov``).
    """
    fn = "parameter_covariance"
    if isinstance(residual_fn, LeastSquaresObjective):
        residual_fn = residual_fn.residual_fn
    if not callable(residual_fn):
        raise TypeError(f"{fn}: residual_fn must be callable, got {type(residual_fn).__name__}")
    check_float_tree(fn, "params", params)
    check_finite_tree(fn, "params", params)

    def rb(p):
        return residual_fn(p, *args, **kwargs)

    flat, _ = tree_ravel(params)
    n = flat.shape[0]
    out = jax.eval_shape(rb, params)
    for leaf in jax.tree.leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"{fn}: residual_fn must return float residuals, got {leaf.dtype}")
    m = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(out))
    if m <= n:
        raise ValueError(
            f"{fn}: needs more residuals than parameters (m > n) to estimate "
            f"s² = ‖r‖²/(m − n); got m = {m} residuals for n = {n} parameters"
        )
    cov, r, J, s = _maybe_jit(_covariance_core, residual_fn, params, args, kwargs)
    if is_concrete((cov, s)):
        check_finite_tree(fn, "residual_fn(params)", r)
        check_finite_tree(fn, "the Jacobian of residual_fn", J)
        threshold = max(m, n) * float(jnp.finfo(s.dtype).eps) * float(s[0])
        if not float(s[-1]) > threshold:
            rank = int(np.sum(np.asarray(s) > threshold))
            raise ValueError(
                f"{fn}: the Jacobian has numerical rank {rank} < n = {n} (smallest "
                f"singular value {float(s[-1]):.3g}, largest {float(s[0]):.3g}): some "
                "combination of parameters is not determined by the data, so its variance "
                "is infinite; fix or remove a parameter, or reparameterize"
            )
    return cov


def _covariance_core(residual_fn, params, args, kwargs):
    """``(cov, r, J, singular values)``; ``cov`` is ``inf`` where it cannot be estimated."""
    flat, _ = tree_ravel(params)
    r = tree_ravel(residual_fn(params, *args, **kwargs))[0]
    J = jacobian_matrix(residual_fn, params, *args, **kwargs).astype(flat.dtype)
    m, n = J.shape
    _, s, vt = jnp.linalg.svd(J, full_matrices=False)
    threshold = max(m, n) * jnp.finfo(J.dtype).eps * s[0]
    full_rank = s[-1] > threshold
    s2 = jnp.vdot(r, r, precision=HIGHEST).real / (m - n)
    w = vt.T / jnp.where(full_rank, s, 1.0)  # V Σ⁻¹
    cov = s2 * _matmul(w, w.T)
    ok = full_rank & jnp.all(jnp.isfinite(cov))
    return jnp.where(ok, cov, jnp.inf).astype(flat.dtype), r, J, s


# ------------------------------------------------------------------- posteriors


class LaplacePredictive(NamedTuple):
    """Linearized predictive ``N(m(x; θ*), J Σ Jᵀ)``, marginally per output.

    Attributes:
      mean: ``model_fn(θ*, x)`` (the model's output structure).
      variance: the diagonal of ``J Σ Jᵀ`` (same structure as ``mean``), the
        epistemic variance of each output; add observation noise for a predictive
        of new data.
    """

    mean: PyTree
    variance: PyTree


def _repair(
    curvature_eigs: jax.Array,
    prior_precision: jax.Array,
    num_dirs: int,
    extra: jax.Array | None = None,
    extra_count: int = 0,
):
    """Precision eigenvalues ``μ = λ + δ`` made positive, with the record of the repair.

    ``curvature_eigs`` are the curvature's eigenvalues ``λ`` (or diagonal entries);
    ``extra`` is the complement precision of the low-rank structure (counted
    ``extra_count`` times), or ``None``. Returns ``(μ, extra, num_clipped, clipped,
    finite, smallest)`` with ``smallest`` the least precision eigenvalue before repair.
    """
    lam = curvature_eigs
    dtype = lam.dtype
    eps = jnp.finfo(dtype).eps
    delta = jnp.asarray(prior_precision, dtype)
    scale = jnp.max(jnp.abs(lam))
    tau = num_dirs * eps * scale
    lam = jnp.where(jnp.abs(lam) <= tau, 0.0, lam)  # rounding-level curvature is zero
    mu = lam + delta
    floor = jnp.maximum(delta, jnp.where(tau > 0, tau, jnp.maximum(jnp.abs(delta), 1.0)))
    finite = jnp.all(jnp.isfinite(mu))
    smallest = jnp.min(mu)
    bad = mu <= 0
    num_bad = jnp.sum(bad)
    added = jnp.sum(jnp.where(bad, floor - mu, 0.0))
    mu = jnp.where(bad, floor, mu)
    if extra is not None and extra_count > 0:
        extra = jnp.asarray(extra, dtype)
        smallest = jnp.minimum(smallest, extra)
        bad_extra = extra <= 0
        num_bad = num_bad + jnp.where(bad_extra, extra_count, 0)
        added = added + jnp.where(bad_extra, extra_count * (floor - extra), 0.0)
        extra = jnp.where(bad_extra, floor, extra)
    return mu, extra, num_bad.astype(jnp.int32), added.astype(dtype), finite, smallest


@dataclasses.dataclass(frozen=True)
class LaplacePosterior(abc.ABC):
    """Gaussian posterior ``N(mean, P⁻¹)`` of :func:`laplace`; a pytree.

    The three structures (``FullLaplace``, ``DiagLaplace``, ``LowRankLaplace``) share
    these attributes and methods; each stores the precision's eigenvalues in its own
    basis. All methods work under ``jit`` and ``vmap``, and the posterior itself can
    cross a ``jit`` boundary or carry a batch axis.

    Attributes:
      mean: θ*, the pytree given to :func:`laplace`.
      value: ``fun(θ*)``.
      prior_precision: δ (a scalar array).
      num_clipped: int32, the number of precision eigenvalues that the repair
        raised (0: the precision was positive definite as computed).
      clipped: the total amount the repair added to those eigenvalues.
      finite: bool, whether the curvature was finite.
      structure: ``"full"``, ``"diag"`` or ``"lowrank"`` (a class attribute).
    """

    mean: PyTree
    value: jax.Array
    prior_precision: jax.Array
    num_clipped: jax.Array
    clipped: jax.Array
    finite: jax.Array

    structure: ClassVar[str] = ""

    # -- per-structure primitives on flat vectors ---------------------------------
    @abc.abstractmethod
    def _precision_flat(self, v: jax.Array) -> jax.Array:
        """Implemented by each structure."""

    @abc.abstractmethod
    def _covariance_flat(self, v: jax.Array) -> jax.Array:
        """Implemented by each structure."""

    @abc.abstractmethod
    def _sqrt_covariance_flat(self, z: jax.Array) -> jax.Array:
        """``L z`` for a factor ``L Lᵀ = Σ``."""

    @abc.abstractmethod
    def _variance_flat(self) -> jax.Array:
        """Implemented by each structure."""

    @abc.abstractmethod
    def log_det_precision(self) -> jax.Array:
        """``log det P`` of the (repaired) precision, exact for the structure."""

    # -- shared API ------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """``n``, the number of scalar parameters."""
        return int(tree_ravel(self.mean)[0].shape[0])

    @property
    def positive_definite(self) -> jax.Array:
        """Whether the precision was finite and positive definite without repair."""
        return self.finite & (self.num_clipped == 0)

    def _unravel(self):
        return tree_ravel(self.mean)[1]

    def _apply(self, name: str, op: Callable, v: PyTree) -> PyTree:
        check_same_structure(f"LaplacePosterior.{name}", "mean", self.mean, "v", v)
        flat, unravel = tree_ravel(self.mean)
        return unravel(op(tree_ravel(v)[0].astype(flat.dtype)))

    @_compiled()
    def precision_matvec(self, v: PyTree) -> PyTree:
        """``P v`` for ``v`` shaped like ``mean``."""
        return self._apply("precision_matvec", self._precision_flat, v)

    @_compiled()
    def covariance_matvec(self, v: PyTree) -> PyTree:
        """``Σ v = P⁻¹ v`` for ``v`` shaped like ``mean``."""
        return self._apply("covariance_matvec", self._covariance_flat, v)

    @_compiled()
    def variance(self) -> PyTree:
        """The diagonal of ``Σ``, shaped like ``mean``."""
        return self._unravel()(self._variance_flat())

    @_compiled()
    def covariance(self) -> jax.Array:
        """Dense ``Σ``, ``(n, n)`` in ``ravel_pytree(mean)`` order (small n)."""
        flat = tree_ravel(self.mean)[0]
        eye = jnp.eye(flat.shape[0], dtype=flat.dtype)
        cov = jax.vmap(self._covariance_flat, in_axes=1, out_axes=1)(eye)
        return 0.5 * (cov + cov.T)

    @_compiled(2)
    def sample(self, key: jax.Array, num: int) -> PyTree:
        """``num`` draws ``θ* + L z``, ``z ~ N(0, I)``; leaves get a leading axis ``num``."""
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"LaplacePosterior.sample: num must be an int >= 1, got {num!r}")
        flat, unravel = tree_ravel(self.mean)
        z = jax.random.normal(key, (int(num), flat.shape[0]), flat.dtype)
        draws = flat + jax.vmap(self._sqrt_covariance_flat)(z)
        return jax.vmap(unravel)(draws)

    @_compiled()
    def log_marginal_likelihood(self) -> jax.Array:
        r"""Laplace's estimate of the log evidence ``log p(D)``.

        .. math::

           \log p(D) \approx -F(θ^*) + \tfrac n2 \log 2π - \tfrac12 \log\det P,

        with ``F`` the whole negative log joint: ``fun`` plus, for ``δ > 0``, the
        isotropic prior ``N(0, δ⁻¹ I)`` that ``prior_precision`` adds, i.e.
        ``F(θ) = fun(θ) + ½ δ ‖θ‖² − (n/2) log(δ / 2π)``. So for ``δ > 0``

        .. math::

           \log p(D) \approx -\mathrm{fun}(θ^*) - \tfrac δ2 \|θ^*\|^2
           + \tfrac n2 \log δ - \tfrac12 \log\det P,

        and for ``δ = 0`` (the prior inside ``fun``) the first formula with
        ``F = fun``. Differentiable in δ (MacKay 1992 §4; Immer et al. 2021).
        """
        flat = tree_ravel(self.mean)[0]
        n = flat.shape[0]
        delta = jnp.asarray(self.prior_precision, flat.dtype)
        positive = delta > 0
        safe = jnp.where(positive, delta, 1.0)
        prior = -0.5 * delta * jnp.vdot(flat, flat, precision=HIGHEST) + 0.5 * n * (
            jnp.log(safe) - _LOG_2PI
        )
        prior = jnp.where(positive, prior, 0.0)
        return -self.value + 0.5 * n * _LOG_2PI - 0.5 * self.log_det_precision() + prior

    @_compiled(1)
    def predictive(self, model_fn: Callable[..., PyTree], *args: Any) -> LaplacePredictive:
        r"""Linearized predictive ``N(m(x; θ*), J Σ Jᵀ)`` at inputs ``x``.

        The model linearized in the parameters, ``m(x; θ) ≈ m(x; θ*) + J (θ − θ*)``
        with ``J = ∂m/∂θ`` at θ*, maps the posterior to a Gaussian over the outputs
        (Immer et al. 2021 §3; MacKay 1992 §6). ``J`` is built densely (one
        ``jacfwd`` or ``jacrev`` pass), then ``Σ Jᵀ`` by the structure's products.

        Args:
          model_fn: ``(params, *args) -> outputs``, e.g. ``model_fn(params, x)``.
          *args: its inputs (``x``, ...).

        Returns:
          A :class:`LaplacePredictive` ``(mean, variance)``, both shaped like the
          model's output.
        """
        if not callable(model_fn):
            raise TypeError(
                f"LaplacePosterior.predictive: model_fn must be callable, got "
                f"{type(model_fn).__name__}"
            )
        flat = tree_ravel(self.mean)[0]
        out = model_fn(self.mean, *args)
        out_flat, unravel_out = tree_ravel(out)
        J = jacobian_matrix(model_fn, self.mean, *args).astype(flat.dtype)  # (k, n)
        sigma_jt = jax.vmap(self._covariance_flat)(J)  # rows: Σ J_iᵀ
        var = jnp.sum(J * sigma_jt, axis=1)
        var = jnp.maximum(var, 0.0).astype(out_flat.dtype)
        return LaplacePredictive(mean=out, variance=unravel_out(var))


@dataclasses.dataclass(frozen=True)
class FullLaplace(LaplacePosterior):
    """Dense precision ``P = V diag(μ) Vᵀ`` (``eigenvectors`` V, ``(n, n)``)."""

    eigenvalues: jax.Array = None
    eigenvectors: jax.Array = None
    structure: ClassVar[str] = "full"

    def _precision_flat(self, v):
        V = self.eigenvectors
        return _matmul(V, self.eigenvalues * _matmul(V.T, v))

    def _covariance_flat(self, v):
        V = self.eigenvectors
        return _matmul(V, _matmul(V.T, v) / self.eigenvalues)

    def _sqrt_covariance_flat(self, z):
        return _matmul(self.eigenvectors, z / jnp.sqrt(self.eigenvalues))

    def _variance_flat(self):
        return _matmul(self.eigenvectors**2, 1.0 / self.eigenvalues)

    def log_det_precision(self):
        return jnp.sum(jnp.log(self.eigenvalues))


@dataclasses.dataclass(frozen=True)
class DiagLaplace(LaplacePosterior):
    """Diagonal precision ``P = diag(d)`` (``diagonal``, ``(n,)``)."""

    diagonal: jax.Array = None
    structure: ClassVar[str] = "diag"

    def _precision_flat(self, v):
        return self.diagonal * v

    def _covariance_flat(self, v):
        return v / self.diagonal

    def _sqrt_covariance_flat(self, z):
        return z / jnp.sqrt(self.diagonal)

    def _variance_flat(self):
        return 1.0 / self.diagonal

    def log_det_precision(self):
        return jnp.sum(jnp.log(self.diagonal))


@dataclasses.dataclass(frozen=True)
class LowRankLaplace(LaplacePosterior):
    """``P = U diag(μ) Uᵀ + μ_c (I − UUᵀ)``: top-k curvature eigenpairs plus the prior.

    ``eigenvectors`` U is ``(n, k)`` with orthonormal columns (a zero column for a
    pair the Lanczos process did not reach), ``eigenvalues`` μ = λ + δ ``(k,)``,
    ``complement`` μ_c = δ on the orthogonal complement, ``lanczos_steps`` the
    Krylov dimension reached. Woodbury in this basis:
    ``Σ = U diag(1/μ) Uᵀ + (1/μ_c)(I − UUᵀ)``, ``log det P = Σ log μ + (n − k) log μ_c``.
    """

    eigenvalues: jax.Array = None
    eigenvectors: jax.Array = None
    complement: jax.Array = None
    lanczos_steps: jax.Array = None
    structure: ClassVar[str] = "lowrank"

    def _complement_inverse(self):
        c = self.complement
        return jnp.where(c > 0, 1.0 / jnp.where(c > 0, c, 1.0), 0.0)

    def _precision_flat(self, v):
        U = self.eigenvectors
        coeff = _matmul(U.T, v)
        return _matmul(U, self.eigenvalues * coeff) + self.complement * (v - _matmul(U, coeff))

    def _covariance_flat(self, v):
        U = self.eigenvectors
        coeff = _matmul(U.T, v)
        rest = v - _matmul(U, coeff)
        return _matmul(U, coeff / self.eigenvalues) + self._complement_inverse() * rest

    def _sqrt_covariance_flat(self, z):
        # L = U diag(μ^-½) Uᵀ + μ_c^-½ (I − UUᵀ), a symmetric square root of Σ.
        U = self.eigenvectors
        coeff = _matmul(U.T, z)
        rest = z - _matmul(U, coeff)
        return (
            _matmul(U, coeff / jnp.sqrt(self.eigenvalues))
            + jnp.sqrt(self._complement_inverse()) * rest
        )

    def _variance_flat(self):
        U2 = self.eigenvectors**2
        return _matmul(U2, 1.0 / self.eigenvalues) + self._complement_inverse() * (
            1.0 - jnp.sum(U2, axis=1)
        )

    def log_det_precision(self):
        n, k = self.eigenvectors.shape
        logdet = jnp.sum(jnp.log(self.eigenvalues))
        if n > k:
            logdet = logdet + (n - k) * jnp.log(self.complement)
        return logdet


for _cls in (FullLaplace, DiagLaplace, LowRankLaplace):
    jax.tree_util.register_dataclass(
        _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[]
    )


# ----------------------------------------------------------------------- laplace


def _operator_diag(matvec: Callable, n: int, dtype, key, num_samples: int) -> jax.Array:
    """Diagonal of a flat operator: exact (n products) or Hutchinson's ``E[z ⊙ Az]``."""
    if key is None:

        def entry(i):
            return matvec(jax.nn.one_hot(i, n, dtype=dtype))[i]

        return jax.lax.map(entry, jnp.arange(n), batch_size=64)

    def sample(k):
        z = jax.random.rademacher(k, (n,), dtype=dtype)
        return z * matvec(z)

    keys = jax.random.split(key, num_samples)
    return jnp.mean(jax.lax.map(sample, keys, batch_size=64), axis=0)


def laplace(
    fun: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    curvature: str = "hessian",
    structure: str = "full",
    rank: int | None = None,
    prior_precision: float | jax.Array = 0.0,
    key: jax.Array | None = None,
    num_samples: int = 100,
) -> LaplacePosterior:
    r"""Laplace approximation ``N(θ*, P⁻¹)`` of the posterior at a mode θ*.

    ``fun`` is the negative log joint ``−log p(D, θ)`` up to what ``prior_precision``
    adds: an isotropic Gaussian prior ``N(0, δ⁻¹ I)`` with ``δ = prior_precision``
    (``fun`` is then typically the negative log likelihood; with ``δ = 0`` ``fun``
    is the whole joint). A second-order expansion at the mode θ* = ``params`` gives

    .. math::

       P = C(θ^*) + δ I, \qquad
       C = ∇^2 \mathrm{fun} \;(\texttt{"hessian"}) \quad\text{or}\quad
       C = J^T ∇^2 ℓ\, J \;(\texttt{"ggn"}),

    the generalized Gauss–Newton matrix of ``fun = ℓ ∘ m``, positive semi-definite
    for a convex output loss and the usual choice for neural networks (Daxberger et
    al. 2021 §3; Immer et al. 2021). ``params`` should be a minimizer of
    ``fun(θ) + ½ δ ‖θ‖²``, e.g. from :func:`newtonjax.minimize`.

    Structures:

    * ``"full"`` — the dense ``n × n`` curvature (``n`` products), eigendecomposed
      once: ``P = V diag(λ + δ) Vᵀ``. For small and moderate ``n``.
    * ``"diag"`` — ``diag(C) + δ``: exact without ``key`` (``n`` products, batched),
      Hutchinson's ``E[z ⊙ Cz]`` over ``num_samples`` Rademacher probes with
      ``key`` (Bekas et al. 2007), for large ``n``.
    * ``"lowrank"`` — the top ``rank`` eigenpairs of ``C`` from
      ``min(n, max(2 rank, rank + 20))`` Lanczos steps with full
      reorthogonalization from a random start (``key`` required), and the prior on
      the rest: ``P = U diag(λ + δ) Uᵀ + δ (I − UUᵀ)``. Its covariance is the
      Woodbury inverse and its ``log det`` is exact for that structure; ``δ > 0``
      unless ``rank = n``.

    The precision must be positive definite. Rounding-level curvature
    (``|λ| ≤ n ε max|λ|``) counts as zero; an eigenvalue ``λ + δ ≤ 0`` raises
    ``ValueError`` when called eagerly and, under ``jit``/``vmap``/``grad``, is
    replaced by ``max(δ, n ε max|λ|)`` (negative curvature clipped to zero) and
    reported in ``num_clipped`` and ``clipped`` of the result.

    Args:
      fun: scalar ``fun(params, *args)``; for ``curvature="ggn"`` an objective from
        :func:`newtonjax.composite_objective` or
        :func:`newtonjax.least_squares_objective`.
      params: the mode θ* (any pytree of floats).
      *args: extra positional arguments of ``fun`` (data).
      curvature: ``"hessian"`` or ``"ggn"``.
      structure: ``"full"``, ``"diag"`` or ``"lowrank"``.
      rank: number of eigenpairs for ``"lowrank"`` (a Python int in ``[1, n]``).
      prior_precision: δ >= 0, a scalar; may be traced (and differentiated).
      key: PRNG key: Lanczos start (``"lowrank"``, required) or Hutchinson probes
        (``"diag"``, optional); unused by ``"full"``.
      num_samples: Hutchinson probes for ``"diag"`` with a key.

    Returns:
      A :class:`LaplacePosterior` (``FullLaplace``, ``DiagLaplace`` or
      ``LowRankLaplace``).

    Raises:
      TypeError: ``"ggn"`` with a plain callable, non-float ``params``, a missing
        key for ``"lowrank"``, non-int ``rank``.
      ValueError: unknown ``curvature``/``structure``, ``rank`` out of range or given
        without ``"lowrank"``, a negative or non-scalar ``prior_precision``,
        non-finite inputs, and (eagerly) a precision that is not positive definite.

    Examples:
      A Gaussian with precision 4 per coordinate and a unit prior on top:

      >>> import jax, jax.numpy as jnp
      >>> import newtonjax as nj
      >>> fun = lambda w: 2.0 * jnp.sum((w - 1.0) ** 2)
      >>> post = nj.laplace(fun, jnp.array([0.8, 0.8]), prior_precision=1.0)
      >>> [round(float(v), 4) for v in post.variance()]
      [0.2, 0.2]
      >>> draws = post.sample(jax.random.PRNGKey(0), 3)
      >>> draws.shape
      (3, 2)

    References:
      MacKay (1992), Neural Computation 4(3) §4; Daxberger et al. (2021), "Laplace
      Redux", NeurIPS, §2–3; Immer, Korzepa & Bauer (2021), AISTATS, §3.
    """
    fn = "laplace"
    _check_choices(fn, fun, curvature, structure)
    check_float_tree(fn, "params", params)
    check_finite_tree(fn, "params", params)
    flat, _ = tree_ravel(params)
    n = flat.shape[0]
    _check_structure_options(fn, structure, rank, key, num_samples, n)
    delta = _prior_precision(fn, prior_precision, flat.dtype)
    check_scalar_output(fn, jax.eval_shape(_bind(fun, args), params))
    post, smallest = _maybe_jit(
        _laplace_core, fun, params, args, delta, key,
        curvature=curvature, structure=structure, rank=rank, num_samples=num_samples,
    )  # fmt: skip
    if is_concrete((post, smallest)):
        _raise_if_not_positive_definite(fn, post, smallest, curvature, n)
    return post


def _check_choices(fn: str, fun, curvature: str, structure: str) -> None:
    """``curvature`` and ``structure`` are known, and ``"ggn"`` has its structure."""
    if curvature not in CURVATURES:
        raise ValueError(
            f"{fn}: unknown curvature {curvature!r}; valid choices: "
            + ", ".join(map(repr, CURVATURES))
        )
    if structure not in STRUCTURES:
        raise ValueError(
            f"{fn}: unknown structure {structure!r}; valid choices: "
            + ", ".join(map(repr, STRUCTURES))
        )
    if not callable(fun):
        raise TypeError(f"{fn}: fun must be callable, got {type(fun).__name__}")
    if curvature == "ggn" and not isinstance(fun, CompositeObjective):
        raise TypeError(
            f"{fn}: curvature='ggn' needs an objective that carries its structure; build "
            "it with nj.composite_objective(model_fn, output_loss_fn) (e.g. a "
            "cross-entropy on logits) or nj.least_squares_objective(residual_fn), got "
            f"{type(fun).__name__}; or use curvature='hessian'"
        )


def _check_structure_options(fn: str, structure, rank, key, num_samples, n: int) -> None:
    """``rank`` and ``key`` as ``structure`` needs them; a valid ``num_samples``."""
    if structure == "lowrank":
        if key is None:
            raise TypeError(
                f"{fn}: structure='lowrank' needs a PRNG key for the Lanczos start vector "
                "(key=jax.random.PRNGKey(0)); newtonjax never picks a seed for you"
            )
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise TypeError(
                f"{fn}: structure='lowrank' needs rank, a Python int in [1, n = {n}], got {rank!r}"
            )
        if not 1 <= rank <= n:
            raise ValueError(f"{fn}: rank must be in [1, n] with n = {n}, got {rank}")
    elif rank is not None:
        raise ValueError(f"{fn}: rank is used only with structure='lowrank', got rank={rank!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{fn}: num_samples must be an int >= 1, got {num_samples!r}")


def _prior_precision(fn: str, prior_precision, dtype) -> jax.Array:
    """δ as a scalar of ``dtype``; checked finite and >= 0 where it is concrete."""
    delta = jnp.asarray(prior_precision)
    if delta.ndim != 0:
        raise ValueError(
            f"{fn}: prior_precision must be a scalar (the prior is N(0, I/δ)), got shape "
            f"{delta.shape}"
        )
    if is_concrete(delta) and not (float(delta) >= 0 and math.isfinite(float(delta))):
        raise ValueError(f"{fn}: prior_precision must be finite and >= 0, got {float(delta)}")
    return delta.astype(dtype)


def _raise_if_not_positive_definite(fn: str, post, smallest, curvature: str, n: int) -> None:
    """Eager calls: a non-finite value or curvature, or a clipped precision, raises."""
    check_finite_tree(fn, "fun(params)", post.value)
    if not bool(post.finite):
        raise ValueError(
            f"{fn}: the curvature at params is not finite (NaN or inf); check that "
            "fun is finite and twice differentiable at params"
        )
    if int(post.num_clipped) > 0:
        hint = (
            "use curvature='ggn' (positive semi-definite for a convex output loss) "
            "or a larger prior_precision"
            if curvature == "hessian"
            else "use a prior_precision > 0 (the data do not determine every direction)"
        )
        raise ValueError(
            f"{fn}: the precision (curvature + prior_precision·I) is not positive "
            f"definite: {int(post.num_clipped)} of {n} eigenvalues are <= 0 (smallest "
            f"{float(smallest):.3g}); {hint}. Under jax.jit they are raised to "
            "max(δ, n·ε·max|λ|) and counted in the posterior's num_clipped"
        )


def _laplace_core(fun, params, args, delta, key, *, curvature, structure, rank, num_samples):
    """The posterior and its smallest unrepaired precision eigenvalue (traceable)."""
    flat, unravel = tree_ravel(params)
    n = flat.shape[0]
    dtype = flat.dtype
    delta = jnp.asarray(delta, dtype)
    fb = _bind(fun, args)
    if curvature == "ggn":
        op = gauss_newton_operator(fun, params, *args)
        value = op.value
    else:
        op = None
        value = fb(params)
    value = jnp.asarray(value, dtype)

    def linear_operator():
        """The curvature as a flat operator, linearized once (for Lanczos / diagonals)."""
        lin = op if op is not None else hessian_operator(fb, params)

        def matvec(x):
            return tree_ravel(lin.matvec(unravel(x.astype(dtype))))[0].astype(dtype)

        return matvec

    common = dict(mean=params, value=value, prior_precision=delta)

    if structure == "full":
        if op is not None:
            C = op.as_matrix().astype(dtype)
        else:
            C = hessian_matrix(fb, params).astype(dtype)
        C = 0.5 * (C + C.T)
        finite_c = jnp.all(jnp.isfinite(C))
        lam, V = jnp.linalg.eigh(jnp.where(finite_c, C, 0.0))
        lam = jnp.where(finite_c, lam, jnp.nan)
        mu, _, num, added, finite, smallest = _repair(lam, delta, n)
        post = FullLaplace(
            **common, num_clipped=num, clipped=added, finite=finite, eigenvalues=mu,
            eigenvectors=V,
        )  # fmt: skip
        return post, smallest

    if structure == "diag":
        if op is None:
            d = tree_ravel(hessian_diag(fb, params, key=key, num_samples=num_samples))[0]
            d = d.astype(dtype)
        else:
            d = _operator_diag(linear_operator(), n, dtype, key, num_samples)
        mu, _, num, added, finite, smallest = _repair(d, delta, n)
        post = DiagLaplace(**common, num_clipped=num, clipped=added, finite=finite, diagonal=mu)
        return post, smallest

    # lowrank: top-k Ritz pairs of the curvature.
    k = int(rank)
    m = min(n, max(2 * k, k + 20))
    v0 = jax.random.normal(key, (n,), dtype)
    res = linalg.lanczos(linear_operator(), v0, m)
    tri = linalg.tridiagonal_eigh(res.alphas, res.betas, res.num_steps)
    score = jnp.where(tri.valid, tri.eigenvalues, -jnp.inf)
    _, idx = jax.lax.top_k(score, k)
    found = tri.valid[idx]
    lam = jnp.where(found, tri.eigenvalues[idx], 0.0)
    U = _matmul(res.basis.T, tri.eigenvectors[:, idx])
    U = jnp.where(found[None, :], U, 0.0)
    finite_u = jnp.all(jnp.isfinite(U))
    lam = jnp.where(finite_u, lam, jnp.nan)
    mu, mu_c, num, added, finite, smallest = _repair(lam, delta, n, delta, n - k)
    post = LowRankLaplace(
        **common, num_clipped=num, clipped=added, finite=finite, eigenvalues=mu,
        eigenvectors=U, complement=mu_c, lanczos_steps=res.num_steps,
    )  # fmt: skip
    return post, smallest


_STATIC = {
    "_covariance_core": (),
    "_laplace_core": ("curvature", "structure", "rank", "num_samples"),
}
