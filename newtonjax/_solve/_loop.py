"""The solve loop: start, one iteration, the convergence tests, the result.

A solve is three pure functions of ``(x0, args)`` (:class:`Solver`), run by
:func:`solve_one` in one ``lax.while_loop`` or by the work pool
(:mod:`newtonjax._solve._pool`) for a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.extend import core as jax_core

from newtonjax._objectives import CompositeObjective, LeastSquaresObjective
from newtonjax._solve import _protocol
from newtonjax._solve._methods import Method
from newtonjax._solve._result import NO_SUBPROBLEM, RUNNING, SUCCESS, SolveResult, Status
from newtonjax._solve._settings import COSINE_JACOBIAN_MAX, Settings
from newtonjax._transforms._levenberg_marquardt import gradient_cosine, seed_jacobian
from newtonjax._transforms._structured import finite_or_zeros, residual_and_jacobian
from newtonjax._tree import (
    PyTree,
    tree_add,
    tree_dtype,
    tree_max_abs,
    tree_norm,
    tree_ravel,
    tree_size,
    tree_where,
)
from newtonjax.linalg import SolverStatus

__all__ = ["Carry", "Solver", "make_solver", "solve_one", "bind_args", "convergence"]


class Carry(NamedTuple):
    params: PyTree
    opt_state: Any
    value: jax.Array
    grad: PyTree
    step: jax.Array
    status: jax.Array
    stall: jax.Array
    num_fun: jax.Array
    num_grad: jax.Array
    num_curvature: jax.Array
    subproblem_status: jax.Array
    history: Any
    x0_scale: jax.Array  # |x0| (flat): the typical size of x in the relative gradient test


class Solver(NamedTuple):
    """One solve as three pure functions of ``(x0, args)``: start, step, result."""

    init: Callable
    step: Callable
    finish: Callable


def bind_args(fun, args):
    """``fun(·, *args)`` as a one-argument objective that keeps its structure."""
    if not args:
        return fun
    if isinstance(fun, LeastSquaresObjective):
        return LeastSquaresObjective(lambda p: fun.model_fn(p, *args))
    if isinstance(fun, CompositeObjective):
        return CompositeObjective(lambda p: fun.model_fn(p, *args), fun.output_loss_fn)
    return lambda p: fun(p, *args)


class _Norms(NamedTuple):
    grad: jax.Array  # ‖∇f(x_new)‖∞
    update: jax.Array  # ‖Δx‖∞
    params: jax.Array  # ‖x_new‖∞
    rel_step: jax.Array  # max |Δx| / (xtol + |x_new|)


def _norms(new_grad, updates, new_params, xtol, dtype) -> _Norms:
    # The four infinity norms in one reduction, which propagates NaN and so doubles
    # as the finiteness test (on CPU every reduction is a kernel of its own, a fixed
    # cost per iteration). The relative step is componentwise, so a large parameter
    # cannot hide the motion of a small one (badly scaled problems such as NIST MGH10).
    g, u, x = (tree_ravel(t)[0].astype(dtype) for t in (new_grad, updates, new_params))
    rows = jnp.stack([jnp.abs(g), jnp.abs(u), jnp.abs(x), jnp.abs(u) / (xtol + jnp.abs(x))])
    return _Norms(*jnp.max(rows, axis=1, initial=0.0))


def relative_gradient(grad, params, x0_scale, value, dtype) -> jax.Array:
    """Dennis & Schnabel's (1983, §7.2) relative gradient with the problem's scales:
    ``max_i |g_i|·s_i / max(|f|, tiny)``, ``s_i = max(|x_i|, |x0_i|)`` (1 where both
    are 0); an exactly zero component counts 0 (see :func:`default_tolerances`)."""
    g = jnp.abs(tree_ravel(grad)[0].astype(dtype))
    scale = jnp.maximum(jnp.abs(tree_ravel(params)[0].astype(dtype)), x0_scale)
    scale = jnp.where(scale == 0, 1.0, scale)
    f_scale = jnp.maximum(jnp.abs(value).astype(dtype), jnp.finfo(dtype).tiny)
    return jnp.max(jnp.where(g == 0, 0.0, g * scale / f_scale), initial=0.0)


def jacobian_cosine(value_fn: LeastSquaresObjective, params, value, grad, dtype,
                    jac=None) -> jax.Array:  # fmt: skip
    """MINPACK's cosine test at ``params`` with ``J`` (formed there unless given; ``n``
    forward products): ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖)``."""
    if jac is None:
        jac = residual_and_jacobian(value_fn.model_fn, params, zero_nonfinite=False)[1]
    column_sq_norms = jnp.sum(jnp.abs(jac.astype(dtype)) ** 2, axis=0)
    return gradient_cosine(tree_ravel(grad)[0].astype(dtype), column_sq_norms, value)


def gradient_measure(value_fn, params, value, grad, x0_scale, dtype, jac=None) -> jax.Array:
    """The quantity the default ``gtol`` test bounds at ``params`` (formed by the loop):
    the cosine for least squares with ``n <= COSINE_JACOBIAN_MAX`` (with the Jacobian
    ``jac`` if given), else the relative gradient."""
    n = tree_ravel(params)[0].shape[0]
    if isinstance(value_fn, LeastSquaresObjective) and n <= COSINE_JACOBIAN_MAX:
        return jacobian_cosine(value_fn, params, value, grad, dtype, jac)
    return relative_gradient(grad, params, x0_scale, value, dtype)


def convergence(old_value, new_value, norms: _Norms, reductions, step, stall,
                settings: Settings, dtype, gradient=None):  # fmt: skip
    """The stopping tests of one iteration: ``(status, stall, finite)``.

    ``gradient`` is the scale-invariant gradient measure at the new point (see
    :func:`default_tolerances`), or ``None`` where the rule reports it at the point
    its update started from (then :func:`_step` applies that test). The first test
    that holds wins, in the order non-finite, gtol (and ``gtol_abs``), ftol, xtol,
    stalled, maxiter. ``ftol`` also holds when a rule that tests its steps reports a
    model-predicted reduction below ``ftol·|f|`` at a finite trial point: no further
    decrease is measurable in f's precision, whether or not this step was accepted
    (compare MINPACK's info = 1 test, Moré, Garbow & Hillstrom 1980).
    """
    gtol, ftol, xtol = settings.tolerances(dtype)
    finite = jnp.isfinite(new_value) & jnp.isfinite(norms.grad) & jnp.isfinite(norms.params)
    decreased = finite & (new_value <= old_value) & (norms.update > 0)
    tiny = jnp.finfo(dtype).tiny
    f_scale = jnp.maximum(jnp.maximum(jnp.abs(old_value), jnp.abs(new_value)), tiny)
    ftol_hit = decreased & (old_value - new_value <= ftol * f_scale)
    if reductions is not None:
        predicted, actual = reductions
        ftol_hit = ftol_hit | (
            finite & jnp.isfinite(actual) & (predicted >= 0) & (predicted <= ftol * f_scale)
        )
    stall = jnp.where(decreased & (new_value < old_value), 0, stall + 1)
    status = jnp.asarray(RUNNING, jnp.int32)
    for hit, code in (  # the first test that holds wins: applied last
        (step >= settings.maxiter, Status.MAX_STEPS),
        (stall >= settings.stall_limit, Status.STALLED),
        (decreased & (norms.rel_step <= xtol), Status.XTOL),
        (ftol_hit, Status.FTOL),
        (finite & _gtol_hit(settings, gradient, gtol, norms.grad, dtype), Status.GTOL),
        (~finite, Status.NONFINITE),
    ):
        status = jnp.where(hit, jnp.int32(code), status)
    return status, stall, finite


def _gtol_hit(settings: Settings, gradient, gtol, grad_inf, dtype):
    hit = jnp.zeros((), bool) if gradient is None else gradient <= gtol
    if settings.gtol_abs is not None:
        hit = hit | (grad_inf <= jnp.asarray(settings.gtol_abs, dtype))
    return hit


def _blame_subproblem(status, sub_status):
    """A solve that stopped on anything but the gradient test while its subproblem
    solver reported a non-finite value stopped because of the subproblem (a
    rejected step's zero predicted reduction is no convergence): say so."""
    stopped = (status != RUNNING) & (status != int(Status.GTOL))
    blame = stopped & (sub_status == int(SolverStatus.NONFINITE))
    return jnp.where(blame, jnp.int32(Status.SUBPROBLEM_FAILED), status)


def _is_success(status):
    ok = status == int(SUCCESS[0])
    for code in SUCCESS[1:]:
        ok = ok | (status == int(code))
    return ok


def _init(fun, tx, method: Method, settings: Settings, x0, args) -> Carry:
    value_fn = bind_args(fun, args)
    dtype = tree_dtype(x0)
    gtol, _, _ = settings.tolerances(dtype)
    value0, grad0 = jax.value_and_grad(value_fn)(x0)
    finite0 = jnp.isfinite(value0) & jnp.all(jnp.isfinite(tree_ravel(grad0)[0]))
    x0_scale = jnp.abs(tree_ravel(x0)[0].astype(dtype))
    opt_state, jac0 = tx.init(x0), None
    if method.carries_jacobian and isinstance(value_fn, LeastSquaresObjective):
        jac0 = residual_and_jacobian(value_fn.model_fn, x0, zero_nonfinite=False)[1]
        opt_state = seed_jacobian(opt_state, finite_or_zeros(jac0))
    measure0 = gradient_measure(value_fn, x0, value0, grad0, x0_scale, dtype, jac0)
    gtol_hit0 = _gtol_hit(settings, measure0, gtol, tree_max_abs(grad0), dtype)
    status0 = jnp.where(
        ~finite0, Status.NONFINITE, jnp.where(gtol_hit0, Status.GTOL, RUNNING)
    ).astype(jnp.int32)
    hist0 = None
    if settings.history:
        nan = jnp.full((settings.maxiter + 1,), jnp.nan, dtype)
        hist0 = {
            "value": nan.at[0].set(value0),
            "grad_norm": nan.at[0].set(tree_max_abs(grad0)),
            "step_norm": nan,
            "damping_or_radius": nan,
        }
    zero, one = jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32)
    return Carry(x0, opt_state, value0, grad0, zero, status0, zero, one, one, zero,
                 jnp.asarray(NO_SUBPROBLEM, jnp.int32), hist0, x0_scale)  # fmt: skip


def _record(fn_name, settings: Settings, c: Carry, step, value, grad, updates, opt_state, dtype):
    """The history row and the verbose line of one iteration."""
    hist = c.history
    if not (settings.history or settings.verbose):
        return hist
    step_norm = tree_norm(updates)
    if settings.history:
        dr = _protocol.damping_or_radius(opt_state)
        dr = jnp.nan if dr is None else dr.astype(dtype)
        rows = {"value": value, "grad_norm": tree_max_abs(grad), "step_norm": step_norm,
                "damping_or_radius": dr}  # fmt: skip
        hist = {k: hist[k].at[step].set(v) for k, v in rows.items()}
    if settings.verbose:
        jax.debug.print(
            fn_name + " step {k}: f = {f:.10e}  |g|inf = {g:.3e}  |step| = {s:.3e}",
            k=step, f=value, g=tree_max_abs(grad), s=step_norm,
        )  # fmt: skip
    return hist


def _step(fn_name, fun, tx, method: Method, products: int, settings: Settings, c: Carry, args):
    value_fn = bind_args(fun, args)
    dtype = tree_dtype(c.params)
    updates, opt_state = tx.update(
        c.grad, c.opt_state, c.params, value_fn=value_fn, value=c.value, grad=c.grad
    )
    new_params = tree_add(c.params, updates)
    carried = _protocol.carried_value_and_grad(opt_state) if method.carries_values else None
    if carried is None:
        new_value, new_grad = jax.value_and_grad(value_fn)(new_params)
    else:  # the rule evaluated f and ∇f where its updates lead (optax's convention)
        new_value, new_grad = carried
    gtol, _, xtol = settings.tolerances(dtype)
    norms = _norms(new_grad, updates, new_params, xtol, dtype)
    # Least squares: a rule that built J at c.params reports the cosine there
    # (MINPACK's order); otherwise the loop forms the test at the new point.
    start_cosine = None
    if isinstance(value_fn, LeastSquaresObjective):
        start_cosine = _protocol.gradient_cosine(opt_state)
    measure = None
    if start_cosine is None:
        measure = gradient_measure(value_fn, new_params, new_value, new_grad, c.x0_scale, dtype)
    step = c.step + 1
    status, stall, finite = convergence(
        c.value, new_value, norms, _protocol.reductions(opt_state), step, c.stall, settings,
        dtype, measure,
    )  # fmt: skip
    sub = _protocol.subproblem_status(opt_state)
    sub = c.subproblem_status if sub is None else sub.astype(jnp.int32)
    status = _blame_subproblem(status, sub)
    # A non-finite point is never accepted: keep the last finite params; nor is the
    # step from a point that passed the cosine test (the solve stops there).
    keep = finite
    if start_cosine is not None:
        start_hit = start_cosine.astype(dtype) <= gtol
        status = jnp.where(start_hit, jnp.int32(Status.GTOL), status)
        keep = finite & ~start_hit
    params = tree_where(keep, new_params, c.params)
    value = jnp.where(keep, new_value, c.value)
    grad = tree_where(keep, new_grad, c.grad)
    cg = _protocol.cg_steps(opt_state)
    num_curvature = c.num_curvature + products + (0 if cg is None else cg.astype(jnp.int32))
    extra_fun = 1 if method.tests_trial and carried is None else 0
    hist = _record(fn_name, settings, c, step, value, grad, updates, opt_state, dtype)
    return Carry(params, opt_state, value, grad, step, status, stall, c.num_fun + 1 + extra_fun,
                 c.num_grad + 1, num_curvature, sub, hist, c.x0_scale)  # fmt: skip


def _finish(c: Carry) -> SolveResult:
    return SolveResult(
        params=c.params,
        value=c.value,
        grad=c.grad,
        grad_norm=tree_max_abs(c.grad),
        num_steps=c.step,
        success=_is_success(c.status),
        status=c.status,
        num_fun=c.num_fun,
        num_grad=c.num_grad,
        num_curvature=c.num_curvature,
        subproblem_status=c.subproblem_status,
        history=c.history,
    )


def make_solver(fn_name: str, fun, tx: optax.GradientTransformation, method: Method,
                products: int, settings: Settings) -> Solver:  # fmt: skip
    """The loop shared by ``minimize`` and ``least_squares``, single or pooled."""

    # The default maxiter depends on n, static in each trace.
    def init(x0, args):
        return _init(fun, tx, method, settings.for_size(tree_size(x0)), x0, args)

    def step(c, args):
        sized = settings.for_size(tree_size(c.params))
        return _step(fn_name, fun, tx, method, products, sized, c, args)

    return Solver(_traced_once(init), _traced_once(step), _traced_once(_finish))


def solve_one(solver: Solver, x0, args) -> SolveResult:
    carry = solver.init(x0, args)
    carry = jax.lax.while_loop(lambda c: c.status == RUNNING, lambda c: solver.step(c, args), carry)
    return solver.finish(carry)


def _traced_once(fn: Callable) -> Callable:
    """``fn`` traced once per argument structure, shapes and dtypes.

    A batched solve needs the start, the iteration and the result twice: in the
    unbatched solve that ``jax.custom_batching.custom_vmap`` records, and in the
    work pool under ``vmap``. The first call records ``fn`` as a jaxpr; later calls
    with the same abstract arguments evaluate that jaxpr (``vmap`` batches its
    equations), so the update rule's Python runs once. A jaxpr that captured a
    value of an enclosing transformation (a tracer among its constants) lives only
    as long as that trace and is not kept.
    """
    cache: dict[Any, tuple[Any, Any]] = {}

    def traced(*args):
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple(jax.typeof(leaf) for leaf in leaves))
        entry = cache.get(key)
        if entry is None:
            closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
            entry = (closed, jax.tree.structure(out_shape))
            if not any(isinstance(c, jax.core.Tracer) for c in closed.consts):
                cache[key] = entry
        closed, out_tree = entry
        return jax.tree.unflatten(out_tree, jax_core.jaxpr_as_fun(closed)(*leaves))

    return traced
