"""Public solves :func:`minimize` and :func:`least_squares`: argument checks, the
compiled-solve cache, and the assembly of method, settings, loop, pool and
implicit rule."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from newtonjax._objectives import CompositeObjective, LeastSquaresObjective
from newtonjax._solve._implicit import differentiable
from newtonjax._solve._loop import bind_args, make_solver
from newtonjax._solve._methods import resolve_method
from newtonjax._solve._pool import with_pooled_batching
from newtonjax._solve._result import SolveResult
from newtonjax._solve._settings import Settings, make_settings
from newtonjax._solve._sharded import make_batch_sharding
from newtonjax._tree import PyTree, check_float_tree, check_scalar_output, tree_dtype, tree_size

__all__ = ["minimize", "least_squares"]


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _check_finite(fn_name, name, tree):
    if _is_concrete(tree):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            arr = np.asarray(leaf)
            if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
                where = jax.tree_util.keystr(path) or ""
                bad = int(np.sum(~np.isfinite(arr)))
                raise ValueError(f"{fn_name}: {name}{where} has {bad} non-finite value(s)")


def _check_objective(fn_name, fun, x0, args) -> bool:
    """Check that ``fun`` is scalar at ``x0``; return whether it closes over tracers.

    The objective is traced once (``jax.make_jaxpr``); a value it closes over that
    belongs to an enclosing ``jit``, ``vmap`` or ``grad`` shows up among the
    jaxpr's constants as a :class:`jax.core.Tracer`.
    """
    jaxpr, out = jax.make_jaxpr(bind_args(fun, args), return_shape=True)(x0)
    check_scalar_output(fn_name, out)
    return not _is_concrete(jaxpr.consts)


def _transform_closes_over_tracers(tx, fun, x0, args) -> bool:
    """Whether a user's transform closes over values of an enclosing trace."""
    value_fn = bind_args(fun, args)

    def one_update(x):
        value, grad = jax.value_and_grad(value_fn)(x)
        return tx.update(grad, tx.init(x), x, value_fn=value_fn, value=value, grad=grad)

    return not _is_concrete(jax.make_jaxpr(one_update)(x0).consts)


# ------------------------------------------------------------ compiled solves

_COMPILED: collections.OrderedDict[tuple, Callable] = collections.OrderedDict()
_COMPILED_MAX = 32


def _compiled_solve(key: tuple, build: Callable[[], Callable]) -> Callable:
    """``jax.jit`` of the solve for ``key``, built once (least recently used dropped).

    A call outside any transformation runs a compiled solve that is kept for the
    next call with the same key (as scipy users call it, in a loop): the key is
    ``(function name, objective, method, options, settings)``, with the objective
    and a transform compared by identity (a new lambda is a new entry) and the
    options and :class:`Settings` by value. Only values in the key can change the
    compiled solve: new ``x0`` or ``args`` with the same shapes and dtypes reuse
    it (``jax.jit`` retraces for new shapes). An entry is dropped when
    ``_COMPILED_MAX`` newer keys were used since; an objective that closes over a
    mutable Python object it reads while tracing must be rebuilt (a new callable)
    for a change to take effect, as with ``jax.jit``.
    """
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    compiled = jax.jit(build())
    _COMPILED[key] = compiled
    if len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return compiled


def _cache_key(fn_name, fun, method, options, settings: Settings) -> tuple | None:
    """The compiled solve's key, or ``None`` when a setting or option is an array."""
    key = (fn_name, fun, method, tuple(sorted(options.items())), settings)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _solve(fn_name, fun, x0, args, method, options, **loop_options) -> SolveResult:
    if not isinstance(args, tuple):
        raise TypeError(f"{fn_name}: args must be a tuple, got {type(args).__name__}")
    check_float_tree(fn_name, "x0", x0)
    _check_finite(fn_name, "x0", x0)
    _check_finite(fn_name, "args", args)
    mesh = loop_options.pop("mesh", None)
    batch_axis = loop_options.pop("batch_axis", None)
    settings = make_settings(
        fn_name, tree_dtype(x0), **loop_options,
        batch_sharding=make_batch_sharding(fn_name, mesh, batch_axis),
    )  # fmt: skip
    options = dict(options or {})
    n = tree_size(x0)
    record, tx = resolve_method(fn_name, method, fun, n, options)
    products = record.dense_products(n, options)
    closes_over_tracers = _check_objective(fn_name, fun, x0, args)

    def build():
        solver = make_solver(fn_name, fun, tx, record, products, settings)
        run_fn = with_pooled_batching(solver, settings.lanes, settings.batch_sharding)
        plain = fun.__call__ if isinstance(fun, CompositeObjective) else fun
        return differentiable(run_fn, plain)

    key = _cache_key(fn_name, fun, method, options, settings)
    if (
        key is not None
        and _is_concrete((x0, args))
        and not closes_over_tracers
        and (isinstance(method, str) or not _transform_closes_over_tracers(tx, fun, x0, args))
    ):
        return _compiled_solve(key, build)(x0, args)
    # Inside jit/vmap/grad the enclosing transformation compiles the solve.
    return build()(x0, args)


def minimize(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    *,
    args: tuple = (),
    method: str | optax.GradientTransformation = "trust_region",
    options: dict[str, Any] | None = None,
    maxiter: int | None = None,
    gtol: float | jax.Array | None = None,
    ftol: float | jax.Array | None = None,
    xtol: float | jax.Array | None = None,
    gtol_abs: float | jax.Array | None = None,
    stall_limit: int = 25,
    history: bool = False,
    verbose: bool = False,
    batch_lanes: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str | tuple[str, ...] | None = None,
) -> SolveResult:
    """Minimize ``fun(x, *args)`` from ``x0`` with a second-order method.

    One ``lax.while_loop`` over an update rule; works under ``jit`` and ``vmap``
    (over ``x0`` and ``args``). ``params`` and ``value`` are differentiable with
    respect to ``args`` in every mode (``grad``, ``jacfwd``, ``jacrev``, ``jvp``,
    ``vjp``, ``hessian``) by the implicit function theorem, not by unrolling:
    ``ẋ = −H⁺ (∂²f/∂x∂a) ȧ`` with ``H = ∇²ₓf`` at the solution, where ``H⁺`` is the
    pseudo-inverse, so a singular Hessian (a valley of minimizers) gives the
    minimum-norm tangent, which is exact for every quantity that is constant along
    the valley. ``x0`` has zero derivative.

    Stopping rules (first hit wins; formulas and dtype defaults in
    :func:`newtonjax._solve._settings.default_tolerances`): a scale-invariant
    gradient test ``max_i |g_i|·max(|x_i|, |x0_i|) / |f| <= gtol`` (Dennis &
    Schnabel's relative gradient; MINPACK's cosine for least squares); the absolute
    ``‖∇f‖∞ <= gtol_abs`` only when ``gtol_abs`` is given; an accepted step
    with ``f_old − f_new <= ftol·max(|f_old|, |f_new|)``, or, for rules that test
    their steps (trust region, Levenberg–Marquardt, Hessian-free), a model-predicted
    reduction below ``ftol·|f|`` at a finite trial point; an accepted step with
    ``max_i |Δx_i| / (xtol + |x_i|) <= xtol``; ``stall_limit`` consecutive
    iterations without decrease (the rounding limit: ``Status.STALLED``);
    ``maxiter`` iterations (rejected steps included). Defaults: float64
    ``gtol=1e-10, ftol=1e-15, xtol=1e-12``; float32 ``gtol=1e-5, ftol=1e-6,
    xtol=1e-6``; no ``gtol_abs``.

    Args:
      fun: scalar objective ``fun(x, *args)``; for ``"gauss_newton"`` and
        ``"levenberg_marquardt"`` an objective from ``least_squares_objective`` or
        ``composite_objective``.
      x0: starting point, any pytree of float arrays.
      args: extra arguments of ``fun`` (a tuple); differentiable.
      method: ``"newton"``, ``"newton_cg"``, ``"trust_region"`` (subproblem via
        ``options={"subproblem": ...}``: ``"exact"`` by default for ``n <= 1000``,
        else ``"steihaug_cg"``), ``"gauss_newton"``, ``"levenberg_marquardt"``,
        ``"hessian_free"``, or any optax transform (the loop passes ``value_fn``,
        ``value`` and ``grad``; its updates are added to ``x``).
      options: keyword arguments of the method's alias (e.g. ``initial_radius``).
      maxiter: iteration cap (static); ``None``: ``min(100·(n + 1), 1000)`` for ``n``
        parameters (see :func:`~newtonjax._solve._settings.default_maxiter`).
      gtol: tolerance of the scale-invariant gradient test (not an absolute
        bound on ``‖∇f‖∞``; see ``default_tolerances``); 0 turns it off.
      ftol: relative function-decrease tolerance.
      xtol: relative step tolerance.
      gtol_abs: absolute tolerance on ``‖∇f‖∞``; ``None`` (default): no absolute
        test.
      stall_limit: iterations without decrease before ``Status.STALLED``.
      history: record value, gradient norm, step norm and damping/radius per
        iteration in ``result.history`` (arrays of length ``maxiter + 1``).
      verbose: print each iteration with ``jax.debug.print``.
      batch_lanes: under ``jax.vmap``, the number of problems solved side by side
        (see below); default about ``2√N`` on the CPU (8 to 128) and ``4√N`` (at
        least 128) on accelerators, at most ``N`` (``newtonjax._solve.default_lanes``).
      mesh: under ``jax.vmap``, a :class:`jax.sharding.Mesh` whose devices split
        the batch (see "Across devices" below); ``None``: the ambient mesh of
        ``jax.set_mesh``, if any. Static: part of the compiled-solve key.
      batch_axis: the mesh axis (or tuple of axes) that splits the batch;
        ``None``: every axis of the mesh; ``()``: one pool for the whole batch
        even on a mesh.

    Returns:
      A :class:`SolveResult`.

    Batches: ``jax.vmap`` of a solve runs a work pool rather than a plain vmapped
    loop: ``batch_lanes`` problems are advanced together and a lane whose problem
    has finished takes the next waiting one, so a batch costs about the sum of the
    problems' own iteration counts instead of the slowest problem's count times N.
    Each result is the one a single solve would give. The batch starts with one
    evaluation of ``f`` and ``∇f`` at all N starting points, so memory holds N start
    states (the size of N results).

    Across devices: on a mesh (``mesh=`` or the ambient ``jax.set_mesh``) the
    batch is split over ``batch_axis`` with :func:`jax.shard_map` and every device
    runs its own pool (``batch_lanes`` wide) on its own problems, so under
    ``jax.jit`` inputs sharded as ``NamedSharding(mesh, P(batch_axis))`` give
    results sharded the same way and the compiled solve holds no collective. A
    batch that does not divide over the devices is padded with copies of its last
    problem (results dropped). Results equal the one-device ones up to rounding::

        mesh = jax.make_mesh((jax.device_count(),), ("data",))
        solve = jax.jit(jax.vmap(lambda x0, y: nj.least_squares(res, x0, args=(y,), mesh=mesh)))
        out = solve(x0s, ys)   # x0s, ys: jax.device_put(..., NamedSharding(mesh, P("data")))

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> result = nj.minimize(rosen, jnp.array([-1.2, 1.0]))
      >>> print(jnp.round(result.params, 4), bool(result.success))
      [1. 1.] True

    References:
      Nocedal & Wright (2006), Numerical Optimization, Ch. 3, 4, 7, 10;
      Blondel et al. (2022), "Efficient and modular implicit differentiation".
    """
    return _solve(
        "minimize", fun, x0, args, method, options, maxiter=maxiter, gtol=gtol, ftol=ftol,
        xtol=xtol, gtol_abs=gtol_abs, stall_limit=stall_limit, history=history, verbose=verbose,
        batch_lanes=batch_lanes, mesh=mesh, batch_axis=batch_axis,
    )  # fmt: skip


def least_squares(
    residual_fn: Callable[..., PyTree],
    x0: PyTree,
    *,
    args: tuple = (),
    method: str | optax.GradientTransformation = "levenberg_marquardt",
    options: dict[str, Any] | None = None,
    maxiter: int | None = None,
    gtol: float | jax.Array | None = None,
    ftol: float | jax.Array | None = None,
    xtol: float | jax.Array | None = None,
    gtol_abs: float | jax.Array | None = None,
    stall_limit: int = 25,
    history: bool = False,
    verbose: bool = False,
    batch_lanes: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str | tuple[str, ...] | None = None,
) -> SolveResult:
    """Minimize ``½‖r(x, *args)‖²`` from ``x0``.

    The same loop as :func:`minimize` on :func:`least_squares_objective`, so the
    Gauss–Newton methods see the residual structure; ``result.value`` is
    ``½‖r‖²`` (scipy's ``cost``). The stopping rules and defaults are those of
    :func:`minimize` (see ``newtonjax._solve._settings.default_tolerances``), with
    MINPACK's cosine ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖) <= gtol`` as the gradient test
    (Moré, Garbow & Hillstrom 1980); ``gtol_abs`` adds an absolute ``‖Jᵀr‖∞`` test.

    Derivatives with respect to ``args`` use the full Hessian of ``½‖r‖²``,
    ``JᵀJ + Σᵢ rᵢ ∇²rᵢ``, not the Gauss–Newton ``JᵀJ``: the two agree only at zero
    residual or for residuals linear in ``x``, and the implicit function theorem
    needs the exact one.

    Args:
      residual_fn: ``r(x, *args)``, an array or pytree of arrays (any shape).
      x0: starting point, any pytree of float arrays.
      args: extra arguments of ``residual_fn`` (data); differentiable.
      method: ``"levenberg_marquardt"`` (default), ``"gauss_newton"``, or any
        method of :func:`minimize`.
      options: keyword arguments of the method's alias.
      maxiter: iteration cap; ``None``: ``min(100·(n + 1), 1000)`` (see
        :func:`minimize`).
      gtol: tolerance of MINPACK's cosine test ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖)``
        (scale-invariant; not an absolute bound on ``‖Jᵀr‖∞``; see
        ``default_tolerances``); 0 turns it off.
      ftol: relative decrease tolerance.
      xtol: relative step tolerance.
      gtol_abs: absolute tolerance on ``‖Jᵀr‖∞``; ``None`` (default): none.
      stall_limit: iterations without decrease before ``Status.STALLED``.
      history: record per-iteration values.
      verbose: print each iteration.
      batch_lanes: problems advanced together under ``jax.vmap`` (see
        :func:`minimize`).
      mesh: under ``jax.vmap``, the mesh whose devices split the batch (see
        :func:`minimize`, "Across devices"); ``None``: the ambient mesh, if any.
      batch_axis: the mesh axis (or axes) that splits the batch; ``None``: all.

    Returns:
      A :class:`SolveResult`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import newtonjax as nj
      >>> t = jnp.linspace(0.0, 1.0, 20)
      >>> y = 2.0 * jnp.exp(-1.5 * t)
      >>> res = nj.least_squares(lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y,
      ...                        jnp.array([1.0, 1.0]), args=(t, y))
      >>> print(jnp.round(res.params, 4))
      [2.  1.5]

    The default ``"levenberg_marquardt"`` is Moré's (1978) trust-region variant with
    Marquardt scaling and geodesic acceleration (see :func:`levenberg_marquardt`);
    it reaches the certified values of all 54 NIST StRD cases (LRE ≥ 6) at the
    default tolerances.

    References:
      Moré (1978), "The Levenberg–Marquardt algorithm: implementation and theory";
      Transtrum & Sethna (2012); Nocedal & Wright (2006), Ch. 10.
    """
    fn_name = "least_squares"
    if not callable(residual_fn):
        raise TypeError(
            f"{fn_name}: residual_fn must be callable, got {type(residual_fn).__name__}"
        )
    check_float_tree(fn_name, "x0", x0)
    if isinstance(args, tuple):
        _check_residuals(fn_name, residual_fn, x0, args)
    return _solve(
        fn_name, LeastSquaresObjective(residual_fn), x0, args, method, options,
        maxiter=maxiter, gtol=gtol, ftol=ftol, xtol=xtol, gtol_abs=gtol_abs,
        stall_limit=stall_limit,
        history=history, verbose=verbose, batch_lanes=batch_lanes, mesh=mesh,
        batch_axis=batch_axis,
    )  # fmt: skip


def _check_residuals(fn_name, residual_fn, x0, args):
    out = jax.eval_shape(lambda p: residual_fn(p, *args), x0)
    leaves = jax.tree.leaves(out)
    if not leaves or sum(int(np.prod(leaf.shape)) for leaf in leaves) == 0:
        raise ValueError(f"{fn_name}: residual_fn returned no residuals (shape {out})")
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{fn_name}: residual_fn must return floating-point residuals, got {leaf.dtype}"
            )
