"""Hessian-free optimization (Martens 2010) as an optax transform.

Descent × search, in optimistix's terms: the descent is truncated conjugate
gradients on the damped curvature system ``(B + λI) p = −g`` — ``B`` the generalized
Gauss–Newton matrix of a structured objective (or the Hessian), CG warm-started
from the previous solution — and the search is the Levenberg–Marquardt damping
rule of Martens (2010), §4.1, driven by the gain ratio ``ρ``:

    ρ < ¼  →  λ ← 3/2 · λ,        ρ > ¾  →  λ ← 2/3 · λ,

with a step whose trial value is not lower than ``f(θ)`` rejected (zero update).

Differences from Martens (2010), on purpose:

1. CG stops on the relative residual ``‖r‖ ≤ cg_rtol·‖g‖`` or after
   ``max_cg_steps`` (the :func:`newtonjax.linalg.cg` test), not on Martens' relative
   progress of the quadratic model (§4.4); there is no CG-iterate backtracking
   (§4.6) and no preconditioner (§4.7).
2. ``ρ`` uses the undamped quadratic model ``−gᵀp − ½pᵀBp`` (as in Martens &
   Sutskever 2012, §8), and a step with ``ρ <= eta`` is rejected.

Mini-batches are closed over in ``value_fn``: the curvature products, the gain
ratio and the trial value all use the batch of that update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from newtonjax import linalg
from newtonjax._checks import check_choice, check_count, check_in_range, check_positive
from newtonjax._curvature import hessian_operator
from newtonjax._objectives import CompositeObjective
from newtonjax._transforms._common import (
    acceptance,
    bind_value_fn,
    model_reduction,
    trial_value,
)
from newtonjax._transforms._damping import damping_bounds
from newtonjax._transforms._structured import structured_operator
from newtonjax._tree import (
    PyTree,
    tree_all_finite,
    tree_axpy,
    tree_dtype,
    tree_norm,
    tree_scale,
    tree_where,
    tree_zeros_like,
)

__all__ = [
    "HessianFreeInfo",
    "ScaleByHessianFreeState",
    "scale_by_hessian_free",
    "hessian_free",
]

CURVATURES = ("auto", "ggn", "hessian")


class HessianFreeInfo(NamedTuple):
    """Diagnostics of the last Hessian-free step (all scalars).

    The damping the step was solved with is the previous state's ``damping``.

    Attributes:
      rho: gain ratio actual / predicted reduction (``-inf`` for a non-finite trial).
      predicted_reduction: ``−gᵀp − ½pᵀBp`` (undamped model).
      actual_reduction: ``f(θ) − f(θ + p)``.
      step_norm: ``‖p‖``.
      rejected: whether the step was rejected (the update is zero).
      cg_steps: CG iterations run.
      cg_status: :class:`newtonjax.linalg.SolverStatus` code of CG.
    """

    rho: jax.Array
    predicted_reduction: jax.Array
    actual_reduction: jax.Array
    step_norm: jax.Array
    rejected: jax.Array
    cg_steps: jax.Array
    cg_status: jax.Array


class ScaleByHessianFreeState(NamedTuple):
    """State of :func:`scale_by_hessian_free`.

    Attributes:
      damping: ``λ`` for the next step (scalar).
      cg_solution: the last CG solution (gradient sign), a pytree like ``params``;
        the next CG run starts from ``warm_start_decay`` times it.
      info: diagnostics of the last step.
    """

    damping: jax.Array
    cg_solution: PyTree
    info: HessianFreeInfo


def _initial_info(dtype) -> HessianFreeInfo:
    zero = jnp.zeros((), dtype)
    return HessianFreeInfo(
        rho=zero,
        predicted_reduction=zero,
        actual_reduction=zero,
        step_norm=zero,
        rejected=jnp.zeros((), bool),
        cg_steps=jnp.zeros((), jnp.int32),
        cg_status=jnp.zeros((), jnp.int32),
    )


def martens_damping_update(damping, rho):
    """Martens (2010) §4.1: ×3/2 if ρ < ¼, ×2/3 if ρ > ¾; ×4 if ρ < 0 or not finite.

    Martens' factors are tuned for stochastic training, where λ moves slowly; a
    step that increased the loss (or hit a NaN) raises λ by 4 so that a
    deterministic solve does not spend tens of rejected steps climbing back from a
    small λ after the curvature changes.
    """
    failed = ~(rho >= 0.0)
    shrink_step = ~(rho >= 0.25)
    return jnp.where(
        failed,
        4.0 * damping,
        jnp.where(shrink_step, 1.5 * damping, jnp.where(rho > 0.75, damping / 1.5, damping)),
    )


def scale_by_hessian_free(
    initial_damping: float | jax.Array = 1.0,
    *,
    curvature: str = "auto",
    max_cg_steps: int | jax.Array = 250,
    cg_rtol: float | jax.Array | None = None,
    warm_start_decay: float | jax.Array = 0.95,
    eta: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Hessian-free step: truncated CG on ``(B + λI) u = g``, tested before it is taken.

    ``B`` is the generalized Gauss–Newton matrix ``Jᵀ∇²ℓJ`` when ``value_fn`` is a
    :func:`~newtonjax.composite_objective` or :func:`~newtonjax.least_squares_objective`
    (positive semi-definite for a convex output loss, Martens 2010 §4.2 and
    Schraudolph 2002), else the Hessian of ``value_fn``. CG starts from
    ``warm_start_decay`` times the previous solution (Martens 2010 §4.5) and runs at
    most ``max_cg_steps`` iterations; on negative curvature (Hessian only) it returns
    its last iterate, and where that is zero the damping-only step ``g/λ``.

    The incoming updates are taken as the gradient ``g``. The step is accepted iff
    the gain ratio ``ρ`` exceeds ``eta`` (so a trial value that is not lower, or not
    finite, rejects it) and ``λ`` follows Martens' Levenberg–Marquardt rule; the
    output is ``u`` (gradient sign) or zeros, so the alias uses learning rate 1.
    Rescaling ``u`` or a line search after this block changes a tested step.

    Args:
      initial_damping: ``λ₀ > 0``.
      curvature: ``"auto"`` (GGN for a structured ``value_fn``, else the Hessian),
        ``"ggn"`` (requires a structured ``value_fn``) or ``"hessian"``.
      max_cg_steps: CG iteration cap (Martens used 250).
      cg_rtol: CG relative residual tolerance, default ``sqrt(eps)``.
      warm_start_decay: ``ζ`` in ``x₀ = ζ·p_prev`` (Martens: 0.95; 0 for a cold start).
      eta: acceptance threshold on ``ρ``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=`` (and accepts ``value=``, ``f(θ)``).

    References:
      Martens (2010), "Deep learning via Hessian-free optimization", ICML, §4
      (§4.1 damping, §4.2 GGN products, §4.5 warm start); Martens & Sutskever
      (2012), "Training deep and recurrent networks with Hessian-free
      optimization", §8; Schraudolph (2002).
    """
    fn_name = "scale_by_hessian_free"
    check_choice(fn_name, "curvature", curvature, CURVATURES)
    check_positive(fn_name, "initial_damping", initial_damping)
    check_positive(fn_name, "warm_start_decay", warm_start_decay, allow_zero=True)
    check_in_range(fn_name, "eta", eta, 0.0, 1.0)
    check_count(fn_name, "max_cg_steps", max_cg_steps)
    check_positive(fn_name, "cg_rtol", cg_rtol)

    def init_fn(params: PyTree) -> ScaleByHessianFreeState:
        dtype = tree_dtype(params)
        return ScaleByHessianFreeState(
            damping=jnp.asarray(initial_damping, dtype),
            cg_solution=tree_zeros_like(params),
            info=_initial_info(dtype),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        del grad
        if params is None:
            raise ValueError(f"{fn_name}: update() needs params")
        fn = bind_value_fn(fn_name, value_fn, extra)
        use_hessian = curvature == "hessian" or (
            curvature == "auto" and not isinstance(value_fn, CompositeObjective)
        )
        if use_hessian:
            op = hessian_operator(fn, params)
        else:
            op, _ = structured_operator(fn_name, value_fn, params, extra)
        dtype = tree_dtype(params)
        f0 = jnp.asarray(op.value if value is None else value, dtype)
        lo, hi = damping_bounds(dtype)
        lam = jnp.clip(state.damping.astype(dtype), lo, hi)

        matvec = lambda v: tree_axpy(lam, v, op.matvec(v))  # noqa: E731
        x0 = tree_scale(warm_start_decay, state.cg_solution)
        x0 = tree_where(tree_all_finite(x0), x0, tree_zeros_like(x0))
        result = linalg.cg(matvec, updates, x0=x0, rtol=cg_rtol, max_steps=max_cg_steps)
        # CG run from a warm start can stop at once on negative curvature and leave a
        # direction the model does not decrease along. A useful CG step lowers the
        # damped model, i.e. its undamped predicted reduction exceeds ½λ‖x‖²;
        # otherwise take the minimizer of the damping-only model, g/λ, and let the
        # gain ratio judge it (λ grows on rejection, so g/λ eventually descends).
        x = tree_where(tree_all_finite(result.x), result.x, tree_zeros_like(result.x))
        x_norm = tree_norm(x)
        predicted_cg = model_reduction(updates, x, op.matvec(x))
        useful = (x_norm > 0) & (predicted_cg > 0.5 * lam * x_norm**2)
        fallback = tree_scale(1.0 / lam, updates)
        predicted_fallback = model_reduction(updates, fallback, op.matvec(fallback))
        step = tree_where(useful, x, fallback)
        predicted = jnp.where(useful, predicted_cg, predicted_fallback).astype(dtype)
        new_value = trial_value(fn, params, step)
        rho, accepted, actual = acceptance(f0, new_value, predicted, eta)
        new_lam = jnp.clip(martens_damping_update(lam, rho), lo, hi)
        u = tree_where(accepted, step, tree_zeros_like(step))
        info = HessianFreeInfo(
            rho=rho.astype(dtype),
            predicted_reduction=predicted,
            actual_reduction=actual.astype(dtype),
            step_norm=tree_norm(step).astype(dtype),
            rejected=~accepted,
            cg_steps=result.num_steps.astype(jnp.int32),
            cg_status=result.status.astype(jnp.int32),
        )
        new_state = ScaleByHessianFreeState(
            damping=new_lam.astype(dtype),
            cg_solution=tree_where(useful, x, tree_zeros_like(x)),
            info=info,
        )
        return u, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hessian_free(
    initial_damping: float | jax.Array = 1.0,
    *,
    curvature: str = "auto",
    max_cg_steps: int | jax.Array = 250,
    cg_rtol: float | jax.Array | None = None,
    warm_start_decay: float | jax.Array = 0.95,
    eta: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Hessian-free optimization (truncated Newton on the damped GGN; Martens 2010).

    Each step runs CG on ``(B + λI) p = −∇f(θ)`` with ``B`` the generalized
    Gauss–Newton matrix of a structured objective (the Hessian for a plain
    callable or ``curvature="hessian"``), warm-started from the previous solution,
    takes ``p`` iff the objective decreases (gain ratio ``ρ > eta``) and adapts ``λ``
    from ``ρ`` (Martens 2010, §4.1). Curvature products are matrix-free
    (forward-over-reverse for the Hessian, jvp/vjp for the GGN), so each step costs
    about ``2 × cg_steps`` passes; build the objective on each mini-batch inside
    the jitted step.

    The step is tested inside the block, so the learning rate is fixed at 1:
    rescaling the updates after this block, or a line search, changes a step that
    was already tested.

    Args:
      initial_damping: ``λ₀``.
      curvature: ``"auto"``, ``"ggn"`` or ``"hessian"``.
      max_cg_steps: CG iteration cap.
      cg_rtol: CG relative residual tolerance.
      warm_start_decay: CG warm-start factor ``ζ``.
      eta: acceptance threshold on ``ρ``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``value_fn=``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import newtonjax as nj
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, 2.0])) ** 2)
      >>> opt = nj.hessian_free(initial_damping=1e-6)
      >>> w = jnp.zeros(2)
      >>> state = opt.init(w)
      >>> updates, state = opt.update(jax.grad(f)(w), state, w, value_fn=f)
      >>> print(jnp.round(optax.apply_updates(w, updates), 4))
      [1. 2.]

    References:
      Martens (2010), "Deep learning via Hessian-free optimization", §4;
      Martens & Sutskever (2012), §8; Nocedal & Wright (2006), §7.1.
    """
    return optax.chain(
        scale_by_hessian_free(
            initial_damping,
            curvature=curvature,
            max_cg_steps=max_cg_steps,
            cg_rtol=cg_rtol,
            warm_start_decay=warm_start_decay,
            eta=eta,
        ),
        optax.scale(-1.0),
    )
