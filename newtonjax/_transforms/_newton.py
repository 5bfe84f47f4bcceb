"""Newton's method as an optax transform: ``scale_by_newton`` and the ``newton`` alias.

Descent × search, in optimistix's terms: the descent is a (modified) Newton
direction, the search optax's backtracking line search starting at step 1.

The direction solves ``B u = g`` where ``B`` is the Hessian made positive definite:

* ``modification="shift"`` (default): Cholesky with added multiple of the identity
  (Nocedal & Wright 2006, §3.4, Alg. 3.3). When ``H + damping·I`` is numerically
  positive definite (its Cholesky factorization succeeds with finite factors and
  every pivot ``L_ii²`` above rounding, ``L_ii² > n·ε·H_ii``), ``B = H + damping·I``
  unmodified, however ill-conditioned: the full step is then the Newton step and
  convergence is quadratic. Otherwise ``B = H + τI`` with the smallest
  ``τ ≥ damping`` that makes ``λ_min(B) ≥ δ = max(damping, sqrt(ε)·max(1, ‖H‖₂))``
  (eigenvalue shift, N&W eq. 3.41): the floor, relative to the Hessian's scale,
  applies only where a shift is needed, and bounds the step along
  negative-curvature directions by ``‖g‖ / δ``. With ``scaling="diagonal"`` (the
  default of the dense solver) the shift is applied to the scaled Hessian
  ``D⁻¹HD⁻¹``, ``D = sqrt|diag H|``: ``B = H + τD²`` (the scaled modified
  Newton method of Gill, Murray & Wright 1981, §4.4.2; Dennis & Schnabel 1983,
  §5.5 and A5.5.1), so that the shift is invariant to a diagonal rescaling of the
  parameters and a large negative eigenvalue in one coordinate does not freeze the
  weakly curved ones (Osborne 1, Bard in Moré, Garbow & Hillstrom 1981).
* ``saddle_free=True``: ``B = |H| = V |Λ| Vᵀ`` (eigenvalues floored at ``δ``), the
  saddle-free Newton direction of Dauphin et al. (2014) that is repelled by
  saddles instead of attracted to them.
* ``modification="none"``: the pure step ``(H + damping·I) u = g``; a singular or
  non-finite system yields a zero update and ``info.singular`` set.
* ``solver="cg"``: matrix-free Newton–CG (N&W Alg. 7.1) on ``H + damping·I`` with
  Hessian-vector products from one linearized gradient; CG stops at negative
  curvature and returns the last iterate; when that iterate is not a descent
  direction (negative curvature on the first iteration leaves it at 0), the
  direction is the gradient itself, i.e. steepest descent (N&W Alg. 7.1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax import linalg
from newtonjax._checks import check_choice, check_count, check_positive, is_python_number
from newtonjax._curvature import hessian_operator
from newtonjax._transforms._common import bind_value_fn, chain_with_linesearch
from newtonjax._tree import (
    PyTree,
    tree_axpy,
    tree_dtype,
    tree_norm,
    tree_ravel,
    tree_vdot,
    tree_where,
)

__all__ = ["NewtonInfo", "ScaleByNewtonState", "scale_by_newton", "newton"]

SOLVERS = ("dense", "cg")
MODIFICATIONS = ("shift", "none")
SCALINGS = ("diagonal", "none")


class NewtonInfo(NamedTuple):
    """Diagnostics of the last Newton direction.

    Attributes:
      damping: the shift ``τ`` actually added to the Hessian (scalar).
      min_eigenvalue: smallest Hessian eigenvalue when it was computed, else NaN
        is never stored: ``+inf`` means "Cholesky succeeded, not computed".
      modified: whether the Hessian had to be modified (shifted or made absolute).
      singular: whether the pure step failed (``modification="none"`` only).
      cg_steps: CG iterations (``solver="cg"``), else 0.
      cg_status: :class:`newtonjax.linalg.SolverStatus` code of CG, else 0.
    """

    damping: jax.Array
    min_eigenvalue: jax.Array
    modified: jax.Array
    singular: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class ScaleByNewtonState(NamedTuple):
    """State of :func:`scale_by_newton`: the last direction's diagnostics."""

    info: NewtonInfo


def _initial_info(dtype) -> NewtonInfo:
    return NewtonInfo(
        damping=jnp.zeros((), dtype),
        min_eigenvalue=jnp.full((), jnp.inf, dtype),
        modified=jnp.zeros((), bool),
        singular=jnp.zeros((), bool),
        cg_steps=jnp.zeros((), jnp.int32),
        cg_status=jnp.zeros((), jnp.int32),
    )


def _floor(eigenvalues: jax.Array, damping: jax.Array | float = 0.0) -> jax.Array:
    """δ = max(damping, sqrt(eps)·max(1, max|λ|)): the smallest eigenvalue allowed."""
    eps = jnp.finfo(eigenvalues.dtype).eps
    return jnp.maximum(damping, jnp.sqrt(eps) * jnp.maximum(1.0, jnp.max(jnp.abs(eigenvalues))))


def _diagonal_scale(hess):
    """``D_j = sqrt|H_jj|``; where ``|H_jj| <= ε·max_k |H_kk|`` (no scale of its own),
    ``sqrt(max_k |H_jk|)`` from the row; 1 for a zero row."""
    a = jnp.abs(hess)
    diag = jnp.diagonal(a)
    tiny = diag <= jnp.finfo(hess.dtype).eps * jnp.max(diag)
    d2 = jnp.where(tiny, jnp.max(a, axis=1), diag)
    return jnp.where(d2 > 0, jnp.sqrt(d2), 1.0)


def _scaled_shift_solve(hess, g, damping):
    """``(H + τD²) x = g``: the eigenvalue shift of ``D⁻¹HD⁻¹``, ``D = sqrt|diag H|``."""
    d = _diagonal_scale(hess)
    x, tau, lam_min, modified = _eigen_solve(
        hess / (d[:, None] * d[None, :]), g / d, damping, False
    )
    return x / d, tau, lam_min, modified


def _eigen_solve(hess, g, damping, saddle_free):
    eigenvalues, vectors = jnp.linalg.eigh(hess)
    delta = _floor(eigenvalues, damping)
    if saddle_free:
        modified = jnp.maximum(jnp.abs(eigenvalues) + damping, delta)
        tau = damping
        was_modified = jnp.any(eigenvalues < delta)
    else:
        tau = jnp.maximum(damping, delta - eigenvalues[0])
        modified = eigenvalues + tau
        was_modified = eigenvalues[0] < delta
    x = vectors @ ((vectors.T @ g) / modified)
    return x, tau, eigenvalues[0], was_modified


def _dense_direction(hess, g, damping, modification, saddle_free, dtype, scaled=False):
    """``damping=None`` stands for a static 0 (no shift to add)."""
    n = g.shape[0]
    eye = jnp.eye(n, dtype=hess.dtype)
    shift = damping  # None: nothing to add to H before factoring
    damping = jnp.zeros((), dtype) if damping is None else damping
    if saddle_free:
        x, tau, lam_min, was_modified = _eigen_solve(hess, g, damping, True)
        return x, tau, lam_min, was_modified, jnp.zeros((), bool)
    if modification == "none":
        x = jnp.linalg.solve(hess + damping * eye, g)
        singular = ~jnp.all(jnp.isfinite(x))
        x = jnp.where(singular, jnp.zeros_like(x), x)
        inf = jnp.full((), jnp.inf, dtype)
        return x, jnp.asarray(damping, dtype), inf, jnp.zeros((), bool), singular

    def cholesky_branch(_):
        shifted = hess if shift is None else hess + shift * eye
        chol = jnp.linalg.cholesky(shifted)
        x = jax.scipy.linalg.cho_solve((chol, True), g)
        # A failed factorization is NaN, and so is the solve: one O(n) test.
        ok = jnp.all(jnp.isfinite(x))
        # Numerically positive definite: each pivot L_ii² = H_ii − Σ_k L_ik² above
        # its rounding error (about n·ε·H_ii). The test is invariant under diagonal
        # scaling D H D, so a badly scaled but positive definite H passes.
        eps = jnp.finfo(hess.dtype).eps
        pivot_ok = jnp.all(jnp.diagonal(chol) ** 2 > n * eps * jnp.abs(jnp.diagonal(shifted)))
        return x, ok & pivot_ok

    x_chol, ok = cholesky_branch(None)

    def eigen_branch(_):
        if scaled:
            x, tau, lam_min, modified = _scaled_shift_solve(hess, g, damping)
        else:
            x, tau, lam_min, modified = _eigen_solve(hess, g, damping, False)
        return x, tau.astype(dtype), lam_min.astype(dtype), modified

    def keep_branch(_):
        return (
            x_chol,
            jnp.asarray(damping, dtype),
            jnp.full((), jnp.inf, dtype),
            jnp.zeros((), bool),
        )

    x, tau, lam_min, modified = jax.lax.cond(ok, keep_branch, eigen_branch, None)
    return x, tau, lam_min, modified, jnp.zeros((), bool)


def scale_by_newton(
    damping: float | jax.Array = 0.0,
    *,
    solver: str = "dense",
    modification: str = "shift",
    saddle_free: bool = False,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
    scaling: str = "diagonal",
) -> optax.GradientTransformationExtraArgs:
    """Newton direction ``B⁻¹ g`` with ``B`` the (modified) Hessian of ``value_fn``.

    The incoming updates are taken as the gradient ``g``; the output has the
    gradient's sign (like :func:`optax.scale_by_adam`), so chain it with
    ``optax.scale(-learning_rate)`` or use :func:`newton`.

    Args:
      damping: ``τ ≥ damping`` is always added to the Hessian (Levenberg-style
        regularization); with ``modification="shift"`` it is the minimum shift,
        and the default 0 leaves a positive definite Hessian unmodified.
      solver: ``"dense"`` (the Hessian as an ``n × n`` matrix, Cholesky with
        eigenvalue fallback; for small ``n``) or ``"cg"`` (matrix-free Newton–CG).
      modification: ``"shift"`` (positive definite by eigenvalue shift) or
        ``"none"`` (the pure Newton step; may point uphill on a non-convex problem).
      saddle_free: use ``|H|`` (dense solver only; Dauphin et al. 2014).
      max_cg_steps: CG iteration cap (``solver="cg"``), default ``n``.
      cg_rtol: CG relative residual tolerance; default the forcing sequence
        ``min(0.5, sqrt‖g‖)`` of N&W Alg. 7.1 (eq. 7.3), which keeps Newton–CG
        superlinear while sparing CG steps far from the solution.
      scaling: where ``H + damping·I`` is not numerically positive definite
        (``modification="shift"``, dense solver), ``"diagonal"`` shifts the scaled
        Hessian, ``B = H + τD²`` with ``D = sqrt|diag H|`` (where a diagonal entry
        is zero to rounding, ``sqrt(max_k |H_jk|)`` from its row) and ``τ ≥ damping`` the
        shift that gives ``D⁻¹BD⁻¹`` the eigenvalue floor δ; ``"none"`` shifts
        ``H`` itself, ``B = H + τI``. ``info.damping`` and ``info.min_eigenvalue``
        are then those of ``D⁻¹HD⁻¹``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=`` (params → scalar loss).

    References:
      Nocedal & Wright (2006), Numerical Optimization, §3.4 (Hessian modification),
      Alg. 7.1 (line search Newton–CG); Gill, Murray & Wright (1981), Practical
      Optimization, §4.4.2 (modified Newton, scaling); Dennis & Schnabel (1983),
      §5.5; Dauphin et al. (2014), "Identifying and attacking the saddle point
      problem in high-dimensional non-convex optimization", §4.
    """
    fn_name = "scale_by_newton"
    check_choice(fn_name, "solver", solver, SOLVERS)
    check_choice(fn_name, "modification", modification, MODIFICATIONS)
    check_choice(fn_name, "scaling", scaling, SCALINGS)
    check_positive(fn_name, "damping", damping, allow_zero=True)
    if saddle_free and solver != "dense":
        raise ValueError(
            f"{fn_name}: saddle_free=True needs solver='dense' (|H| needs eigenvalues)"
        )
    check_count(fn_name, "max_cg_steps", max_cg_steps)
    check_positive(fn_name, "cg_rtol", cg_rtol)

    def init_fn(params: PyTree) -> ScaleByNewtonState:
        return ScaleByNewtonState(info=_initial_info(tree_dtype(params)))

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        del value, grad, state
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        fn = bind_value_fn(fn_name, value_fn, extra)
        dtype = tree_dtype(params)
        op = hessian_operator(fn, params)
        info = _initial_info(dtype)
        if solver == "dense":
            g_flat, unravel = tree_ravel(updates)
            hess = op.as_matrix()
            static_zero = is_python_number(damping) and damping == 0
            x, tau, lam_min, modified, singular = _dense_direction(
                hess,
                g_flat,
                None if static_zero else jnp.asarray(damping, dtype),
                modification,
                saddle_free,
                dtype,
                scaled=scaling == "diagonal",
            )
            direction = unravel(x.astype(g_flat.dtype))
            info = info._replace(
                damping=tau, min_eigenvalue=lam_min, modified=modified, singular=singular
            )
        else:
            matvec = lambda v: tree_axpy(damping, v, op.matvec(v))  # noqa: E731
            if cg_rtol is None:
                # Forcing sequence η = min(0.5, sqrt‖g‖) (N&W eq. 7.3): loose far from
                # the solution, superlinear convergence near it.
                rtol = jnp.minimum(0.5, jnp.sqrt(tree_norm(updates)))
            else:
                rtol = cg_rtol
            result = linalg.cg(matvec, updates, rtol=rtol, max_steps=max_cg_steps)
            # Negative curvature on the first CG iteration leaves x = 0: fall back
            # to the gradient (steepest descent, N&W Alg. 7.1) whenever the CG
            # iterate is not a descent direction (uᵀg > 0; NaN fails the test).
            descent = tree_vdot(result.x, updates) > 0
            direction = tree_where(descent, result.x, updates)
            info = info._replace(
                damping=jnp.asarray(damping, dtype),
                modified=result.status == linalg.SolverStatus.NEGATIVE_CURVATURE,
                cg_steps=result.num_steps.astype(jnp.int32),
                cg_status=result.status.astype(jnp.int32),
            )
        return direction, ScaleByNewtonState(info=info)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def newton(
    learning_rate: float | jax.Array = 1.0,
    damping: float | jax.Array = 0.0,
    *,
    solver: str = "dense",
    modification: str = "shift",
    saddle_free: bool = False,
    max_cg_steps: int | None = None,
    cg_rtol: float | jax.Array | None = None,
    scaling: str = "diagonal",
    linesearch: optax.GradientTransformationExtraArgs | None | str = "backtracking",
    max_linesearch_steps: int = 30,
) -> optax.GradientTransformationExtraArgs:
    """Globally convergent Newton's method: modified Newton direction + line search.

    ``θ⁺ = θ − η · B⁻¹ ∇f(θ)`` with ``B`` the Hessian made positive definite
    (:func:`scale_by_newton`) and ``η`` from optax's backtracking (Armijo) line
    search started at ``learning_rate`` every step, so near a strict minimum the
    full step is taken and convergence is quadratic (Nocedal & Wright 2006, Thm. 3.5).

    Args:
      learning_rate: initial (and maximal) step; 1 is the Newton step.
      damping: minimum shift added to the Hessian.
      solver: ``"dense"`` or ``"cg"``, see :func:`scale_by_newton`.
      modification: ``"shift"`` or ``"none"``.
      saddle_free: use ``|H|``.
      max_cg_steps: CG iteration cap for ``solver="cg"``.
      cg_rtol: CG tolerance for ``solver="cg"``.
      scaling: ``"diagonal"`` (shift ``H + τD²``, ``D = sqrt|diag H|``) or
        ``"none"`` (``H + τI``) where the Hessian needs modifying, see
        :func:`scale_by_newton`.
      linesearch: ``"backtracking"`` (default), ``"zoom"``, ``None`` (fixed step
        ``learning_rate``) or any optax line-search transform.
      max_linesearch_steps: backtracking/zoom iteration cap.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=`` (and accepts ``value=``/``grad=``).

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import newtonjax as nj
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, 2.0, 3.0])) ** 2)
      >>> opt = nj.newton()
      >>> w = jnp.zeros(3)
      >>> state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
      >>> print(jnp.round(optax.apply_updates(w, updates), 5))
      [1. 2. 3.]

    References:
      Nocedal & Wright (2006), Numerical Optimization, §3.3–3.4, Alg. 3.1 and 7.1.
    """
    direction = scale_by_newton(
        damping,
        solver=solver,
        modification=modification,
        saddle_free=saddle_free,
        max_cg_steps=max_cg_steps,
        cg_rtol=cg_rtol,
        scaling=scaling,
    )
    return chain_with_linesearch(
        "newton", direction, learning_rate, linesearch, max_linesearch_steps
    )
