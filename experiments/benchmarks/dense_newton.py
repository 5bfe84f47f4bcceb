"""Dense Newton benchmark: newtonjax against scipy, optimistix and a hand-written loop.

Purpose: measure what ``nj.minimize(method="newton")`` and
``nj.minimize(method="trust_region")`` (dense Hessian, exact subproblem) cost on a
problem where a dense second-order method is the natural choice, against the peers a
user would otherwise reach for and against a hand-written jitted Newton loop (the
floor: nothing but the Newton step and the gradient test).

Problem: L2-regularized logistic regression, float64,
``f(w) = mean_i softplus(-y_i x_iᵀw) + ½ λ ‖w‖²`` with ``λ = 1e-2``, ``n`` features and
``m = 5n`` samples; ``X`` standard normal, labels ``y = ±1`` drawn from the logistic
model of a random ``w_true`` (‖X w_true‖ of order 2 per sample, so the problem is
neither separable nor trivial), ``w0 = 0``; seeded by ``(SEED, n)``. Its Hessian
``Xᵀ diag(σ(s)σ(−s)/m) X + λI`` is positive definite, so every method converges to
the same unique minimizer.

Contenders, all in one run, in a seeded random order per round (round-robin, so a
load change on a shared machine hits all of them alike):

1. ``nj.minimize(method="newton")`` — dense Hessian from vmapped Hessian-vector
   products of one ``jax.linearize``, Cholesky, optax backtracking line search;
2. ``nj.minimize(method="trust_region")`` — exact subproblem (the Newton step by
   Cholesky when it is interior, Moré–Sorensen via ``eigh`` otherwise; the first
   step is the Newton step when ``H ≻ 0``); and, for context,
   ``nj.minimize(method="newton_cg")`` (matrix-free, forcing η = min(0.5, √‖g‖));
3. ``scipy.optimize.minimize`` ``"trust-exact"`` (jitted ``value_and_grad`` and
   ``jax.hessian`` callbacks) and ``"Newton-CG"`` (jitted ``value_and_grad`` and
   Hessian-vector-product callbacks);
4. optimistix: ``optx.minimise`` with ``optx.BFGS`` and ``optx.root_find`` of the
   gradient with ``optx.Newton``;
5. the floor: a hand-written ``lax.while_loop`` (``g = ∇f``, ``H = jax.hessian(f)``,
   ``cho_solve``, full step, stop on the gradient test).

Stopping: ``‖∇f‖∞ ≤ 1e-8`` (``GTOL``) for newtonjax (``ftol = xtol = 0`` so nothing
else stops it), the floor and scipy (a callback raises ``StopIteration`` at the test,
with the gradient taken from a one-entry cache so it costs no extra evaluation; the
methods' own tests are switched off). optimistix has no gradient test (its solvers
stop on a Cauchy test on successive iterates and values), so its ``rtol = atol`` are
set tight enough (``OPTX_TOL``) that its final gradient is below ``GTOL`` too. Every
contender's final ``‖∇f‖∞`` and ``f`` are recomputed by one independent jitted
gradient and reported next to the distance to the floor's solution.

Reported per ``n`` and contender: compile time (trace + lower + XLA compile of the
solve, or of the scipy callbacks), steady-state solve time — median wall-clock time
and median CPU time of this process (all threads) over round-robin samples after
one warm-up call (see :func:`run_size` for how many) —, iterations, final gradient
norm and value, the distance to the floor's solution, and both time ratios to the
floor. CPU time is reported because on a shared machine wall time measures waiting
as much as work. Targets: newtonjax within 1.05× of the floor; at
``n = 1000`` at least 2× faster than scipy ``trust-exact``.

jaxlib's CPU Cholesky and ``eigh`` call LAPACK from scipy's OpenBLAS; the run limits
it to one thread (``--blas-threads``, via threadpoolctl when installed), because its
spinning worker threads made both 10–100× slower and erratic on a loaded 2-core
machine; the component table times both settings.

Analysis (``--analysis``, on by default, at the largest size): per-iteration
components (value, gradient, the dense Hessian built three ways, Cholesky, ``eigh``,
the trust-region subproblem, one update of each rule) with XLA's flop counts; the
compile time of solve variants (line search and eigenvalue fallback on/off) and the
cost of un-jitted ``nj.minimize`` calls, at the smallest size; and **prototype**
variants — written here to measure what a change to newtonjax would buy, **not
newtonjax API** — timed in the same rounds as the contenders:

* the floor with the Hessian from ``nj.hessian_operator(...).as_matrix()`` and from
  the GLM structure ``Xᵀ diag(ℓ'') X + λI`` (one GEMM instead of two);
* ``nj.minimize`` with ``nj.newton(linesearch=None)`` (the line search's cost);
* ``nj.minimize`` with a prototype "lean" Newton transform (``nj.newton()`` without
  its O(n²) passes over the Hessian);
* ``nj.minimize`` with a prototype GLM-Newton transform (structured Hessian, same
  Cholesky and line search as ``nj.newton``).

Expected result: the dense solvers are dominated by forming the Hessian; inside a
solve loop XLA hoists the loop-invariant ``X·I`` GEMM, so an iteration costs one
``m × n × n`` GEMM. ``nj.minimize(method="newton")`` and ``"trust_region"`` take the
floor's iterates and sit a few percent above it (line search or trial value, and
the loop's bookkeeping, which weighs most at ``n = 100``); matrix-free methods
(Newton–CG with a forcing term, BFGS) win at ``n = 1000``.

Runtime: about 4 minutes on 2 loaded CPU cores with the defaults (mostly
``n = 1000``; the written section records the load). The recorded section used
more repeats (its command line is in it).

Command::

    python -m experiments.benchmarks.dense_newton [--sizes 100 500 1000] [--repeats 3]
        [--min-time 5] [--component-repeats 3] [--blas-threads 1] [--no-analysis]
        [--write] [--note TEXT]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax  # noqa: E402  (x64 is switched on before any array is created)
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import optimistix as optx  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

import newtonjax as nj  # noqa: E402
from experiments.benchmarks._common import cpu_counters as _cpu_counters  # noqa: E402
from experiments.benchmarks._common import machine_info as _machine_info  # noqa: E402
from experiments.benchmarks._common import other_load as _other_load  # noqa: E402
from experiments.benchmarks._common import replace_section  # noqa: E402

SECTION_TITLE = "## Dense Newton"
RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n"

L2 = 1e-2  # λ
SAMPLES_PER_FEATURE = 5  # m = 5 n
SEED = 0
GTOL = 1e-8  # ‖∇f‖∞ at which every contender stops
MAXITER = 100
BFGS_MAXITER = 5000
OPTX_TOL = 1e-12  # optimistix rtol = atol (Cauchy test), tight enough for ‖∇f‖∞ ≤ GTOL
TARGET_FLOOR_RATIO = 1.05
TARGET_SCIPY_SPEEDUP = 2.0
DEFAULT_SIZES = (100, 500, 1000)
MAX_ROUNDS = 30
LONG_ROUND_S = 10.0
FLOOR = "floor"


# ------------------------------------------------------------------------ problem


def loss(w: jax.Array, X: jax.Array, y: jax.Array) -> jax.Array:
    """``mean(softplus(−y ⊙ Xw)) + ½ λ ‖w‖²``."""
    return jnp.mean(jax.nn.softplus(-y * (X @ w))) + 0.5 * L2 * jnp.dot(w, w)


def margins(w: jax.Array, X: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Model half of :func:`loss` as a composite objective: ``(y ⊙ Xw, w)``."""
    return y * (X @ w), w


def output_loss(outputs: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Output-loss half: ``mean(softplus(−s)) + ½ λ ‖w‖²`` (convex)."""
    s, w = outputs
    return jnp.mean(jax.nn.softplus(-s)) + 0.5 * L2 * jnp.dot(w, w)


@dataclasses.dataclass(frozen=True)
class Problem:
    n: int
    m: int
    X: jax.Array
    y: jax.Array
    w0: jax.Array

    @property
    def args(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.w0, self.X, self.y


def make_problem(n: int, seed: int = SEED) -> Problem:
    """Synthetic logistic regression with ``n`` features and ``5n`` samples (float64)."""
    rng = np.random.default_rng([seed, n])
    m = SAMPLES_PER_FEATURE * n
    X = rng.standard_normal((m, n))
    w_true = rng.standard_normal(n) * (2.0 / np.sqrt(n))
    prob = 1.0 / (1.0 + np.exp(-(X @ w_true)))
    y = np.where(rng.random(m) < prob, 1.0, -1.0)
    return Problem(n, m, jnp.asarray(X), jnp.asarray(y), jnp.zeros(n))


# --------------------------------------------------- Hessian builders (floor + proto)


def hessian_autodiff(w, X, y):
    """``jax.hessian`` (forward-over-reverse Jacobian of the gradient): the floor's."""
    return jax.hessian(loss)(w, X, y)


def hessian_linearized(w, X, y):
    """What ``nj.newton``/``nj.trust_region`` build: vmapped products of one linearize."""
    return nj.hessian_operator(loss, w, X, y).as_matrix()


def hessian_glm(w, X, y):
    """PROTOTYPE: the GLM structure ``Xᵀ diag(ℓ'') X + λI``, one GEMM.

    For a linear model ``z = Xw`` and a separable output loss ``ℓ(z) = Σᵢ ℓᵢ(zᵢ)``
    the GGN equals the Hessian, and ``diag ∇²ℓ = ∇²ℓ · 1`` is one Hessian-vector
    product on the ``m`` outputs, so the whole ``n × n`` matrix costs one
    ``m × n × n`` GEMM instead of the two of ``X (X V)`` over a basis ``V = I``.
    """
    z = X @ w

    def sample_loss(z):
        return jnp.mean(jax.nn.softplus(-y * z))

    curvature = jax.jvp(jax.grad(sample_loss), (z,), (jnp.ones_like(z),))[1]
    return (X.T * curvature) @ X + L2 * jnp.eye(w.shape[0], dtype=w.dtype)


# ----------------------------------------------------------------- jitted solvers


def floor_solver(hessian_fn: Callable = hessian_autodiff) -> Callable:
    """Hand-written jitted Newton loop: full Cholesky step, stop on ``‖g‖∞ ≤ GTOL``."""

    def solve(w0, X, y):
        grad = jax.grad(loss)

        def cond(carry):
            _, g, k = carry
            return (jnp.max(jnp.abs(g)) > GTOL) & (k < MAXITER)

        def body(carry):
            w, g, k = carry
            chol = jnp.linalg.cholesky(hessian_fn(w, X, y))
            w = w - jax.scipy.linalg.cho_solve((chol, True), g)
            return w, grad(w, X, y), k + 1

        w, _, k = jax.lax.while_loop(cond, body, (w0, grad(w0, X, y), jnp.zeros((), jnp.int32)))
        return {"params": w, "iterations": k}

    return solve


def nj_solver(method: Any, options: dict | None = None) -> Callable:
    """``nj.minimize`` with the common stopping rule; ``method`` may be a factory."""

    def solve(w0, X, y):
        tx = method(X, y) if callable(method) and not isinstance(method, str) else method
        result = nj.minimize(
            loss, w0, args=(X, y), method=tx, options=options,
            gtol=0.0, gtol_abs=GTOL, ftol=0.0, xtol=0.0, maxiter=MAXITER,
        )  # fmt: skip
        return {
            "params": result.params,
            "iterations": result.num_steps,
            "status": result.status,
            "num_fun": result.num_fun,
            "num_grad": result.num_grad,
            "num_curvature": result.num_curvature,
        }

    return solve


def optx_bfgs_solver(w0, X, y):
    solver = optx.BFGS(rtol=OPTX_TOL, atol=OPTX_TOL)
    sol = optx.minimise(
        lambda w, a: loss(w, *a), solver, w0, args=(X, y), max_steps=BFGS_MAXITER, throw=False
    )
    return {
        "params": sol.value,
        "iterations": sol.stats["num_steps"],
        "ok": sol.result == optx.RESULTS.successful,
    }


def optx_newton_root_solver(w0, X, y):
    solver = optx.Newton(rtol=OPTX_TOL, atol=OPTX_TOL)
    sol = optx.root_find(
        lambda w, a: jax.grad(loss)(w, *a), solver, w0, args=(X, y), max_steps=MAXITER,
        throw=False,
    )  # fmt: skip
    return {
        "params": sol.value,
        "iterations": sol.stats["num_steps"],
        "ok": sol.result == optx.RESULTS.successful,
    }


# ------------------------------------------------------ prototype update rules


class ProtoNewtonState(NamedTuple):
    """State of the prototype GLM-Newton direction (no memory)."""


def proto_glm_newton(X, y) -> optax.GradientTransformationExtraArgs:
    """PROTOTYPE: ``nj.newton`` with the Hessian from :func:`hessian_glm`.

    Direction ``G⁻¹ g`` by Cholesky (``G`` is positive definite here: ``λ > 0``; a
    failed factorization falls back to the gradient), then the same optax
    backtracking line search as ``nj.newton()``.
    """

    def init_fn(params):
        del params
        return ProtoNewtonState()

    def update_fn(updates, state, params=None, **extra):
        del extra
        chol = jnp.linalg.cholesky(hessian_glm(params, X, y))
        d = jax.scipy.linalg.cho_solve((chol, True), updates)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, updates)
        return d, state

    direction = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return optax.chain(
        direction,
        optax.scale_by_learning_rate(1.0),
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=30, decrease_factor=0.5, increase_factor=jnp.inf,
            max_learning_rate=1.0,
        ),
    )  # fmt: skip


def proto_lean_newton(X, y) -> optax.GradientTransformationExtraArgs:
    """PROTOTYPE: ``nj.newton()``'s direction without its O(n²) bookkeeping.

    The Hessian as *rows* of vmapped products of ``jax.linearize(jax.grad(f))`` (it is
    symmetric, so no transposed copy), no dense ``damping·I`` added (damping 0), no
    pivot or finiteness checks over the matrix: Cholesky, ``cho_solve``, one O(n)
    finiteness test on the direction and, only when that fails, an ``eigh``
    eigenvalue-floor fallback under ``lax.cond`` (N&W §3.4). Same optax backtracking
    line search as ``nj.newton()``.
    """
    del X, y

    def init_fn(params):
        del params
        return ProtoNewtonState()

    def update_fn(updates, state, params=None, *, value_fn=None, **extra):
        del extra
        _, linear_fn = jax.linearize(jax.grad(value_fn), params)
        H = jax.vmap(linear_fn)(jnp.eye(params.shape[0], dtype=params.dtype))
        d = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), updates)

        def eigen_fallback(_):
            w, V = jnp.linalg.eigh(H)
            floor = jnp.sqrt(jnp.finfo(w.dtype).eps) * jnp.maximum(1.0, jnp.max(jnp.abs(w)))
            return V @ ((V.T @ updates) / jnp.maximum(w, floor))

        d = jax.lax.cond(jnp.all(jnp.isfinite(d)), lambda _: d, eigen_fallback, None)
        return d, state

    direction = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return optax.chain(
        direction,
        optax.scale_by_learning_rate(1.0),
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=30, decrease_factor=0.5, increase_factor=jnp.inf,
            max_learning_rate=1.0,
        ),
    )  # fmt: skip


# -------------------------------------------------------------------- contenders


@dataclasses.dataclass
class Outcome:
    params: np.ndarray
    iterations: int
    note: str = ""


@dataclasses.dataclass
class Contender:
    """A solver to compile once and time; ``build(problem) -> (compile_s, run, outcome)``."""

    name: str
    label: str
    group: str  # "main" or "prototype"
    build: Callable[[Problem], tuple[float, Callable[[], Any], Callable[[Any], Outcome]]]


def jax_contender(name, label, solve_fn, group="main", note_fn=None) -> Contender:
    def build(prob: Problem):
        start = time.perf_counter()
        compiled = jax.jit(solve_fn).lower(*prob.args).compile()
        compile_s = time.perf_counter() - start

        def run():
            return jax.block_until_ready(compiled(*prob.args))

        def outcome(out) -> Outcome:
            note = note_fn(out) if note_fn else ""
            return Outcome(np.asarray(out["params"]), int(out["iterations"]), note)

        return compile_s, run, outcome

    return Contender(name, label, group, build)


def _nj_note(out) -> str:
    status = nj.Status(int(out["status"])).name
    note = f"{status}; f/g evals {int(out['num_fun'])}/{int(out['num_grad'])}"
    if int(out["num_curvature"]):  # counted for named methods only
        note += f", {int(out['num_curvature'])} Hessian products"
    return note


def _optx_note(out) -> str:
    return "successful" if bool(out["ok"]) else "not successful"


class _GradCache:
    """Jitted ``value_and_grad`` for scipy, remembering the last point it saw."""

    def __init__(self, vg, X, y):
        self.vg, self.X, self.y = vg, X, y
        self.x = None
        self.calls = 0

    def __call__(self, x):
        if self.x is not None and np.array_equal(x, self.x):
            return self.f, self.g
        self.calls += 1
        f, g = self.vg(x, self.X, self.y)
        self.x, self.f, self.g = np.array(x, copy=True), float(f), np.asarray(g)
        return self.f, self.g


def scipy_contender(name, label, method) -> Contender:
    def build(prob: Problem):
        w0, X, y = prob.args
        start = time.perf_counter()
        vg = jax.jit(jax.value_and_grad(loss)).lower(w0, X, y).compile()
        if method == "trust-exact":
            hess = jax.jit(jax.hessian(loss)).lower(w0, X, y).compile()
        else:

            def hvp_fn(w, v, X, y):
                return jax.jvp(lambda p: jax.grad(loss)(p, X, y), (w,), (v,))[1]

            hvp = jax.jit(hvp_fn).lower(w0, w0, X, y).compile()
        compile_s = time.perf_counter() - start
        x0 = np.asarray(w0)

        def run():
            cache = _GradCache(vg, X, y)
            counts = {"hess": 0}

            def callback(intermediate_result):
                _, g = cache(intermediate_result.x)
                if np.max(np.abs(g)) <= GTOL:
                    raise StopIteration

            if method == "trust-exact":

                def hess_fn(x):
                    counts["hess"] += 1
                    return np.asarray(hess(x, X, y))

                kwargs = {"hess": hess_fn, "options": {"gtol": 0.0, "maxiter": MAXITER}}
            else:

                def hessp_fn(x, v):
                    counts["hess"] += 1
                    return np.asarray(hvp(x, v, X, y))

                kwargs = {"hessp": hessp_fn, "options": {"xtol": 0.0, "maxiter": MAXITER}}
            res = scipy.optimize.minimize(
                cache, x0, jac=True, method=method, callback=callback, **kwargs
            )
            return res, cache.calls, counts["hess"]

        def outcome(out) -> Outcome:
            res, calls, hess_calls = out
            what = "Hessians" if method == "trust-exact" else "Hessian-vector products"
            return Outcome(
                np.asarray(res.x), int(res.nit), f"f+g evals {calls}; {hess_calls} {what}"
            )

        return compile_s, run, outcome

    return Contender(name, label, "main", build)


def main_contenders() -> list[Contender]:
    return [
        jax_contender("nj_newton", '`nj.minimize(method="newton")`', nj_solver("newton"),
                      note_fn=_nj_note),
        jax_contender("nj_trust_region", '`nj.minimize(method="trust_region")` (exact)',
                      nj_solver("trust_region"), note_fn=_nj_note),
        jax_contender("nj_newton_cg", '`nj.minimize(method="newton_cg")` (context)',
                      nj_solver("newton_cg"), note_fn=_nj_note),
        scipy_contender("scipy_trust_exact", 'scipy `"trust-exact"`', "trust-exact"),
        scipy_contender("scipy_newton_cg", 'scipy `"Newton-CG"`', "Newton-CG"),
        jax_contender("optx_bfgs", "optimistix `minimise(BFGS)`", optx_bfgs_solver,
                      note_fn=_optx_note),
        jax_contender("optx_newton", "optimistix `root_find(∇f, Newton)`",
                      optx_newton_root_solver, note_fn=_optx_note),
        jax_contender(FLOOR, "hand-written loop (`jax.hessian` + `cho_solve`)", floor_solver()),
    ]  # fmt: skip


def prototype_contenders() -> list[Contender]:
    p = "prototype"
    return [
        jax_contender("floor_linearized", "floor, Hessian by `nj.hessian_operator().as_matrix()`",
                      floor_solver(hessian_linearized), group=p),
        jax_contender("floor_glm", "floor, GLM Hessian `Xᵀ diag(ℓ'') X + λI` (1 GEMM)",
                      floor_solver(hessian_glm), group=p),
        jax_contender("nj_newton_no_ls", "`nj.minimize(method=nj.newton(linesearch=None))`",
                      nj_solver(nj.newton(linesearch=None)), group=p, note_fn=_nj_note),
        jax_contender("nj_lean_newton", "`nj.minimize` + lean Newton transform (no O(n²) "
                      "bookkeeping)", nj_solver(proto_lean_newton), group=p, note_fn=_nj_note),
        jax_contender("nj_glm_newton", "`nj.minimize` + GLM-Newton transform",
                      nj_solver(proto_glm_newton), group=p, note_fn=_nj_note),
    ]  # fmt: skip


# ---------------------------------------------------------------------- timing


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:  # optional: without it the BLAS thread count is left alone
        return None
    return threadpoolctl


def _current_blas_threads() -> int | None:
    """Threads of the OpenBLAS that jaxlib's LAPACK calls (scipy's), if known."""
    tpc = _threadpoolctl()
    if tpc is None:
        return None
    counts = [i["num_threads"] for i in tpc.threadpool_info() if i["user_api"] == "blas"]
    return max(counts) if counts else None


_DEFAULT_BLAS_THREADS = None  # set in main() before any limit is applied


def _blas_threads(threads: int | None):
    """Context manager limiting BLAS/LAPACK threads (a no-op for ``None``)."""
    tpc = _threadpoolctl()
    if threads is None or tpc is None:
        return contextlib.nullcontext()
    return tpc.threadpool_limits(limits=threads, user_api="blas")


@dataclasses.dataclass
class Row:
    n: int
    name: str
    label: str
    group: str
    compile_s: float
    times: list[float]
    cpu_times: list[float]
    iterations: int
    grad_norm: float
    value: float
    note: str
    dist_to_floor: float = float("nan")
    value_diff: float = float("nan")

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def best(self) -> float:
        return float(np.min(self.times))

    @property
    def cpu_median(self) -> float:
        return float(np.median(self.cpu_times))


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(output, wall s, CPU s of this process)`` of one blocking call."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_size(n: int, contenders: list[Contender], args: argparse.Namespace, log) -> list[Row]:
    """Compile, warm up and time every contender round-robin at one size.

    Rounds: at least ``args.repeats``, more (up to ``MAX_ROUNDS``) while a size has
    used less than ``args.min_time`` seconds, so that millisecond solves get enough
    samples. When the warm-up round takes longer than ``LONG_ROUND_S`` the warm-up
    calls count as the first sample (their one-off costs are then far below the
    noise) and one round fewer is run.
    """
    prob = make_problem(n)
    check = jax.jit(jax.value_and_grad(loss)).lower(*prob.args).compile()
    built = {}
    warm: dict[str, tuple[float, float]] = {}
    for c in contenders:
        log(f"  n={n}: compiling {c.name} ...")
        compile_s, run, outcome = c.build(prob)
        out, wall, cpu = _timed(run)  # warm-up call, also gives the outcome
        built[c.name] = (compile_s, run, outcome(out))
        warm[c.name] = (wall, cpu)
    round_s = sum(w for w, _ in warm.values())
    count_warmup = round_s > LONG_ROUND_S
    rounds = args.repeats - 1 if count_warmup else args.repeats
    if not count_warmup and round_s > 0:
        rounds = max(rounds, min(MAX_ROUNDS, int(args.min_time / round_s)))
    times = {c.name: [warm[c.name][0]] if count_warmup else [] for c in contenders}
    cpu_times = {c.name: [warm[c.name][1]] if count_warmup else [] for c in contenders}
    rng = np.random.default_rng([SEED, n, 1])
    for r in range(rounds):
        for i in rng.permutation(len(contenders)):
            name = contenders[i].name
            _, wall, cpu = _timed(built[name][1])
            times[name].append(wall)
            cpu_times[name].append(cpu)
        log(f"  n={n}: round {r + 1}/{rounds} done")
    rows = []
    for c in contenders:
        compile_s, _, out = built[c.name]
        value, grad = check(jnp.asarray(out.params), prob.X, prob.y)
        rows.append(
            Row(n, c.name, c.label, c.group, compile_s, times[c.name], cpu_times[c.name],
                out.iterations, float(jnp.max(jnp.abs(grad))), float(value), out.note)
        )  # fmt: skip
    floor = next((r for r in rows if r.name == FLOOR), None)
    if floor is not None:
        w_floor = built[FLOOR][2].params
        for row in rows:
            row.dist_to_floor = float(np.max(np.abs(built[row.name][2].params - w_floor)))
            row.value_diff = row.value - floor.value
    return rows


# ---------------------------------------------------------------- components


@dataclasses.dataclass
class Component:
    label: str
    fn: Callable
    args: tuple
    blas_threads: int | None = None  # run under this BLAS/LAPACK thread limit
    median_ms: float = float("nan")
    cpu_ms: float = float("nan")
    flops: float = float("nan")


def _xla_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def run_components(n: int, repeats: int, log) -> list[Component]:
    """Per-iteration pieces at a mid-solve point, jitted and timed round-robin."""
    prob = make_problem(n)
    X, y = prob.X, prob.y
    w_star = jax.jit(floor_solver())(*prob.args)["params"]
    w = 0.5 * w_star  # a point on the way, where Newton steps are still O(1)
    g = jax.grad(loss)(w, X, y)
    H = hessian_autodiff(w, X, y)
    composite = nj.composite_objective(margins, output_loss)
    newton_tx = nj.newton()
    tr_tx = nj.trust_region()

    def one_update(tx):
        def fn(w, X, y):
            value_fn = lambda p: loss(p, X, y)  # noqa: E731
            value, grad = jax.value_and_grad(value_fn)(w)
            u, _ = tx.update(grad, tx.init(w), w, value_fn=value_fn, value=value, grad=grad)
            return jax.value_and_grad(value_fn)(w + u)

        return fn

    def floor_iteration(w, X, y):
        gr = jax.grad(loss)(w, X, y)
        chol = jnp.linalg.cholesky(hessian_autodiff(w, X, y))
        w = w - jax.scipy.linalg.cho_solve((chol, True), gr)
        return jax.value_and_grad(loss)(w, X, y)

    radius_small = 0.1 * jnp.linalg.norm(jnp.linalg.solve(H, g))
    components = [
        Component("value `f(w)`", loss, (w, X, y)),
        Component("`jax.value_and_grad(f)`", jax.value_and_grad(loss), (w, X, y)),
        Component("Hessian: `jax.hessian(f)` (floor)", hessian_autodiff, (w, X, y)),
        Component("Hessian: `nj.hessian_operator(f, w).as_matrix()` (nj.newton, "
                  "nj.trust_region)", hessian_linearized, (w, X, y)),
        Component("GGN: `nj.gauss_newton_operator(composite, w).as_matrix()`",
                  lambda w, X, y: nj.gauss_newton_operator(composite, w, X, y).as_matrix(),
                  (w, X, y)),
        Component("prototype GLM Hessian `Xᵀ diag(ℓ'') X + λI`", hessian_glm, (w, X, y)),
        Component("Cholesky + `cho_solve`",
                  lambda H, g: jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), g),
                  (H, g)),
        Component("`jnp.linalg.eigh`", jnp.linalg.eigh, (H,)),
    ]  # fmt: skip
    default_threads = _DEFAULT_BLAS_THREADS
    if default_threads and default_threads != _current_blas_threads():
        components += [
            Component(f"Cholesky + `cho_solve`, {default_threads} BLAS threads (default)",
                      components[6].fn, (H, g), blas_threads=default_threads),
            Component(f"`jnp.linalg.eigh`, {default_threads} BLAS threads (default)",
                      jnp.linalg.eigh, (H,), blas_threads=default_threads),
        ]  # fmt: skip
    components += [
        Component("`nj.linalg.trust_region_exact`, interior step",
                  lambda H, g: nj.linalg.trust_region_exact(H, g, 1e10).step, (H, g)),
        Component("`nj.linalg.trust_region_exact`, boundary step",
                  lambda H, g, r: nj.linalg.trust_region_exact(H, g, r).step,
                  (H, g, radius_small)),
        Component("one floor iteration (Hessian, Cholesky, step, f and ∇f)",
                  floor_iteration, (w, X, y)),
        Component("one `nj.newton()` update + f and ∇f at the new point",
                  one_update(newton_tx), (w, X, y)),
        Component("one `nj.trust_region()` update + f and ∇f at the new point",
                  one_update(tr_tx), (w, X, y)),
    ]  # fmt: skip
    compiled = []
    for comp in components:
        log(f"  components: compiling {comp.label[:50]} ...")
        c = jax.jit(comp.fn).lower(*comp.args).compile()
        comp.flops = _xla_flops(c)
        jax.block_until_ready(c(*comp.args))
        compiled.append(c)
    walls: list[list[float]] = [[] for _ in components]
    cpus: list[list[float]] = [[] for _ in components]
    rng = np.random.default_rng([SEED, n, 2])
    for _ in range(repeats):
        for i in rng.permutation(len(components)):
            comp, fn = components[i], compiled[i]
            with _blas_threads(comp.blas_threads):
                _, wall, cpu = _timed(lambda fn=fn, a=comp.args: jax.block_until_ready(fn(*a)))
            walls[i].append(wall)
            cpus[i].append(cpu)
    for comp, wall, cpu in zip(components, walls, cpus, strict=True):
        comp.median_ms = float(np.median(wall)) * 1e3
        comp.cpu_ms = float(np.median(cpu)) * 1e3
    return components


# ------------------------------------------------------------ compile breakdown


@dataclasses.dataclass
class CompileRow:
    key: str
    label: str
    trace_s: float
    lower_s: float
    compile_s: float
    stablehlo_lines: int

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.compile_s


def run_compile_breakdown(n: int, log) -> list[CompileRow]:
    """Trace, lower and XLA-compile times of solve variants (fresh closures, no cache)."""
    prob = make_problem(n)
    variants = [
        ("floor", "hand-written floor", lambda: floor_solver()),
        ("newton", '`nj.minimize(method="newton")`', lambda: nj_solver("newton")),
        ("newton_no_ls", "… `nj.newton(linesearch=None)`",
         lambda: nj_solver(nj.newton(linesearch=None))),
        ("newton_no_fallback", '… `nj.newton(modification="none")` (no eigh fallback)',
         lambda: nj_solver(nj.newton(modification="none"))),
        ("newton_plain", '… `nj.newton(modification="none", linesearch=None)`',
         lambda: nj_solver(nj.newton(modification="none", linesearch=None))),
        ("glm", "… prototype GLM-Newton (Cholesky, line search, no fallback)",
         lambda: nj_solver(proto_glm_newton)),
        ("tr", '`nj.minimize(method="trust_region")`', lambda: nj_solver("trust_region")),
    ]  # fmt: skip
    out = []
    for key, label, make in variants:
        log(f"  compile breakdown: {label[:50]} ...")
        fn = make()  # a new closure: nothing is reused from earlier compiles
        t0 = time.perf_counter()
        traced = jax.jit(fn).trace(*prob.args)
        t1 = time.perf_counter()
        lowered = traced.lower()
        t2 = time.perf_counter()
        lowered.compile()
        t3 = time.perf_counter()
        lines = len(lowered.as_text().splitlines())
        out.append(CompileRow(key, label, t1 - t0, t2 - t1, t3 - t2, lines))
    return out


def eager_call_times(n: int, calls: int = 3) -> tuple[list[float], float]:
    """Wall times of repeated *un-jitted* ``nj.minimize`` calls, and of a jitted solve.

    What a user who calls ``nj.minimize`` like ``scipy.optimize.minimize`` (no
    ``jax.jit`` around it) pays per call; the first call is left out.
    """
    prob = make_problem(n)

    def call():
        result = nj.minimize(
            loss, prob.w0, args=(prob.X, prob.y), method="newton", gtol=0.0, gtol_abs=GTOL,
            ftol=0.0, xtol=0.0,
        )
        return jax.block_until_ready(result.params)

    call()
    eager = [_timed(call)[1] for _ in range(calls)]
    jitted = jax.jit(nj_solver("newton")).lower(*prob.args).compile()
    jax.block_until_ready(jitted(*prob.args))
    samples = [_timed(lambda: jax.block_until_ready(jitted(*prob.args)))[1] for _ in range(5)]
    return eager, float(np.median(samples))


def _loop_body_computations(hlo: str) -> tuple[dict[str, list[str]], set[str]]:
    """Computations of an optimized HLO module, and those reachable from a while body."""
    comps: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            current = head.group(1)
            comps[current] = []
        elif current is not None:
            comps[current].append(line)
    callee = re.compile(
        r"(?:calls|body|condition|to_apply|branch_computations)=\{?([^,}]+(?:, ?%[\w.\-]+)*)"
    )
    edges = {
        c: {
            name.strip().lstrip("%")
            for m in callee.findall("\n".join(lines))
            for name in m.split(",")
        }
        for c, lines in comps.items()
    }
    todo = [
        name.lstrip("%")
        for lines in comps.values()
        for line in lines
        if " while(" in line
        for name in re.findall(r"body=(%?[\w.\-]+)", line)
    ]
    inside: set[str] = set()
    while todo:
        c = todo.pop()
        if c not in inside:
            inside.add(c)
            todo.extend(edges.get(c, ()))
    return comps, inside


def jacobian_gemm_hoisted(n: int) -> dict[str, bool]:
    """Whether XLA computes the ``m × n`` product ``X·I`` outside the solve's while loop.

    The Hessian of ``loss`` from n products is ``Xᵀ(D (X V))`` with ``V = I``; ``X V``
    does not change between iterations, and XLA's loop-invariant code motion can move
    it out of the loop. Checked in the optimized HLO of the floor and of
    ``nj.minimize(method="newton")``: a dot with an ``m × n`` result outside every
    while body.
    """
    prob = make_problem(n)
    shapes = (f"f64[{prob.m},{n}]", f"f64[{n},{prob.m}]")
    out = {}
    for key, fn in (("floor", floor_solver()), ("nj_newton", nj_solver("newton"))):
        hlo = jax.jit(fn).lower(*prob.args).compile().as_text()
        comps, inside = _loop_body_computations(hlo)
        where = [
            c in inside
            for c, lines in comps.items()
            for line in lines
            if " dot(" in line and any(f"= {shape}" in line for shape in shapes)
        ]
        out[key] = bool(where) and not any(where)
    return out


def trust_region_boundary_steps(n: int) -> tuple[int, int]:
    """(iterations whose exact step needed more than Cholesky, iterations) of nj's TR.

    An exact trust-region step needs ``eigh`` only when it lies on the boundary (or
    was rejected); interior steps are Newton steps. Read from ``history``.
    """
    prob = make_problem(n)

    def solve(w0, X, y):
        return nj.minimize(
            loss, w0, args=(X, y), method="trust_region", gtol=0.0, gtol_abs=GTOL, ftol=0.0,
            xtol=0.0, maxiter=MAXITER, history=True,
        )  # fmt: skip

    result = jax.jit(solve)(*prob.args)
    k = int(result.num_steps)
    step = np.asarray(result.history["step_norm"])[1 : k + 1]
    after = np.asarray(result.history["damping_or_radius"])[1 : k + 1]
    # The automatic initial radius: the first step is the Newton step when H ≻ 0.
    before = np.concatenate([[np.inf], after[:-1]])
    boundary = (step >= 0.99 * before) | (step == 0)
    return int(np.sum(boundary)), k


# ---------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    import jaxlib

    return {
        **_machine_info(),
        "versions": (
            f"newtonjax {nj.__version__}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
            f"optax {optax.__version__}, optimistix {optx.__version__}, "
            f"scipy {scipy.__version__}, numpy {np.__version__}, "
            f"Python {platform.python_version()}"
        ),
    }


def _s(x: float) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _e(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.1e}"


def _ratio(a: float, b: float) -> str:
    return "—" if not (np.isfinite(a) and np.isfinite(b) and b > 0) else f"{a / b:.2f}×"


def results_table(rows: list[Row]) -> str:
    floor = {r.n: r for r in rows if r.name == FLOOR}
    lines = [
        "| n | contender | compile s | solve s (median) | min–max s | samples | CPU s "
        "(median) | iterations | ‖∇f‖∞ | f − f_floor | ‖w − w_floor‖∞ | vs floor (wall) | "
        "vs floor (best wall) | vs floor (CPU) | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        f = floor.get(r.n)
        lines.append(
            f"| {r.n} | {r.label} | {_s(r.compile_s)} | {_s(r.median)} | "
            f"{_s(min(r.times))}–{_s(max(r.times))} | {len(r.times)} | {_s(r.cpu_median)} | "
            f"{r.iterations} | {_e(r.grad_norm)} | {r.value_diff:+.1e} | "
            f"{_e(r.dist_to_floor)} | {_ratio(r.median, f.median if f else float('nan'))} | "
            f"{_ratio(r.best, f.best if f else float('nan'))} | "
            f"{_ratio(r.cpu_median, f.cpu_median if f else float('nan'))} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def components_table(components: list[Component], n: int) -> str:
    unit = next(c for c in components if c.label.startswith("`jax.value_and_grad"))
    lines = [
        f"| per-iteration piece, n = {n}, m = {SAMPLES_PER_FEATURE * n} | median ms | "
        "CPU ms | CPU × value_and_grad | XLA GFLOP |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in components:
        lines.append(
            f"| {c.label} | {c.median_ms:.1f} | {c.cpu_ms:.1f} | {c.cpu_ms / unit.cpu_ms:.1f} | "
            f"{c.flops / 1e9:.3f} |"
        )
    return "\n".join(lines) + "\n"


def compile_table(compile_rows: list[CompileRow], n: int) -> str:
    lines = [
        f"| solve variant (n = {n}) | trace s | lower s | XLA compile s | total s | "
        "StableHLO lines |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in compile_rows:
        lines.append(
            f"| {r.label} | {r.trace_s:.2f} | {r.lower_s:.2f} | {r.compile_s:.2f} | "
            f"{r.total_s:.2f} | {r.stablehlo_lines} |"
        )
    return "\n".join(lines) + "\n"


def _get(rows, n, name) -> Row | None:
    return next((r for r in rows if r.n == n and r.name == name), None)


def _both(a: Row | None, b: Row | None) -> tuple[float, float]:
    """(best-wall ratio, median-CPU ratio) of ``a`` to ``b``."""
    if a is None or b is None:
        return float("nan"), float("nan")
    return a.best / b.best, a.cpu_median / b.cpu_median


def targets_text(rows: list[Row]) -> str:
    lines = []
    sizes = sorted({r.n for r in rows})
    for n in sizes:
        floor = _get(rows, n, FLOOR)
        for name in ("nj_newton", "nj_trust_region"):
            r = _get(rows, n, name)
            if r is None or floor is None:
                continue
            wall, cpu = _both(r, floor)
            verdict = {
                (True, True): "met",
                (False, False): "missed",
            }.get((wall <= TARGET_FLOOR_RATIO, cpu <= TARGET_FLOOR_RATIO), "met on one clock")
            lines.append(
                f"- n = {n}: {r.label} takes {wall:.2f}× the floor's best wall time, {cpu:.2f}× "
                f"its median CPU time (target ≤ {TARGET_FLOOR_RATIO}×: {verdict})."
            )
    n = max(sizes)
    scipy_te = _get(rows, n, "scipy_trust_exact")
    for name in ("nj_newton", "nj_trust_region"):
        r = _get(rows, n, name)
        if r is None or scipy_te is None:
            continue
        wall, cpu = _both(scipy_te, r)
        verdict = {
            (True, True): "met",
            (False, False): "missed",
        }.get((wall >= TARGET_SCIPY_SPEEDUP, cpu >= TARGET_SCIPY_SPEEDUP), "met on one clock")
        lines.append(
            f"- n = {n}: {r.label} is {wall:.2f}× faster than scipy trust-exact in best wall "
            f"time, {cpu:.2f}× in median CPU time (target ≥ {TARGET_SCIPY_SPEEDUP}×: {verdict})."
        )
    bad = [r for r in rows if not r.grad_norm <= GTOL]
    for r in bad:
        lines.append(f"- n = {r.n}: {r.label} stopped at ‖∇f‖∞ = {r.grad_norm:.1e} > {GTOL}.")
    if not bad:
        lines.append(
            f"- Every contender reached ‖∇f‖∞ ≤ {GTOL:g}; all final values agree with the "
            "floor's to a few ulps and all solutions to the accuracy the gradient test implies."
        )
    return "\n".join(lines) + "\n"


def analysis_text(result: dict[str, Any]) -> str:
    """Where nj.minimize's time goes at the analysis size, with this run's numbers."""
    rows, n = result["rows"], result["analysis_size"]
    comps = result["components"]

    def comp(prefix: str) -> Component:
        found = [c for c in comps if c.label.startswith(prefix)]
        return found[0] if found else Component(prefix, None, ())

    def row(name: str) -> Row | None:
        return _get(rows, n, name)

    def solve(name: str) -> str:
        r = row(name)
        if r is None:
            return "—"
        if r.median < 0.1:
            return f"{1e3 * r.median:.1f} ms wall / {1e3 * r.cpu_median:.1f} ms CPU"
        return f"{r.median:.2f} s wall / {r.cpu_median:.2f} s CPU"

    def vs(a: str, b: str) -> str:
        wall, cpu = _both(row(a), row(b))
        return f"{wall:.2f}× best wall, {cpu:.2f}× CPU"

    def speedup(a: str, b: str) -> str:  # how much faster b is than a
        wall, cpu = _both(row(a), row(b))
        return f"{wall:.2f}× (best wall), {cpu:.2f}× (CPU)"

    def it(name: str) -> int:
        r = row(name)
        return -1 if r is None else r.iterations

    hess, lin, ggn, glm = (
        comp("Hessian: `jax.hessian"), comp("Hessian: `nj.hessian"), comp("GGN: "),
        comp("prototype GLM"),
    )  # fmt: skip
    chol, eigh, vg, val = (
        comp("Cholesky + `cho_solve`"), comp("`jnp.linalg.eigh`"),
        comp("`jax.value_and_grad"), comp("value"),
    )  # fmt: skip
    chol_mt = next((c for c in comps if c.blas_threads and c.label.startswith("Cholesky")), None)
    eigh_mt = next((c for c in comps if c.blas_threads and c.label.startswith("`jnp.linalg")), None)
    floor_it, newton_it, tr_it = (
        comp("one floor iteration"), comp("one `nj.newton"), comp("one `nj.trust_region"),
    )  # fmt: skip
    boundary, tr_steps = result["tr_boundary"]
    cg = row("nj_newton_cg")
    cg_products = re.search(r"(\d+) Hessian products", cg.note).group(1) if cg else "?"
    scipy_cg = row("scipy_newton_cg")
    scipy_cg_products = (
        re.search(r"(\d+) Hessian-vector", scipy_cg.note).group(1) if scipy_cg else "?"
    )
    crows = {r.key: r.total_s for r in result["compile_rows"]}

    def ctime(key: str) -> float:
        return crows.get(key, float("nan"))

    parts = [
        f"**Where `nj.minimize`'s time goes at n = {n}** (m = {SAMPLES_PER_FEATURE * n}). "
        "Forming the Hessian is nearly all of it. Alone (component table), `jax.hessian` "
        f"costs {hess.cpu_ms:.0f} ms of CPU and {hess.flops / 1e9:.2f} GFLOP: the n "
        "Hessian-vector products are two m·n·n GEMMs, `X V` and `Xᵀ(D X V)` over the basis "
        "V = I; Cholesky and the solve "
        f"{chol.cpu_ms:.0f} ms, a gradient {vg.cpu_ms:.1f} ms, a value {val.cpu_ms:.1f} ms. "
        "Inside a solve loop, though, `X V = X` does not change between iterations and "
        "XLA's loop-invariant code motion moves that GEMM out of the `while` loop "
        + (
            "(checked in the optimized HLO of the floor and of "
            '`nj.minimize(method="newton")`: the m × n product sits outside every loop '
            "body), "
            if result["hoisted"] and all(result["hoisted"].values())
            else "(**not** confirmed in this run's HLO check), "
        )
        + "so an iteration costs one GEMM: the floor's solve is "
        f"{row(FLOOR).cpu_median / max(it(FLOOR), 1) * 1e3:.0f} ms of CPU per iteration "
        f"against {floor_it.cpu_ms:.0f} ms for one iteration compiled alone. "
        f'`nj.minimize(method="newton")` takes the same {it("nj_newton")} iterates as the '
        f"floor (the line search always accepts the full step) and costs "
        f"{vs('nj_newton', FLOOR)} the floor; XLA counts "
        f"{100 * (newton_it.flops / floor_it.flops - 1):.2f} % more arithmetic per "
        "iteration. What remains is the line search (one value at the trial point, which "
        f"the loop then recomputes with the gradient: {vs('nj_newton_no_ls', FLOOR)} the "
        "floor without it) and O(n²) passes over the Hessian in `scale_by_newton` (see G). "
        "The way the Hessian is formed does not matter: `jax.hessian` "
        f"{hess.cpu_ms:.0f} ms, nj's vmapped linearized products {lin.cpu_ms:.0f} ms, "
        f"`nj.gauss_newton_operator(...).as_matrix()` {ggn.cpu_ms:.0f} ms of CPU, all "
        f"{hess.flops / 1e9:.1f} GFLOP (the floor with nj's Hessian: "
        f"{vs('floor_linearized', FLOOR)}); XLA does not fold `X @ I` into `X`, so a dense "
        "GGN from a `jacfwd` Jacobian of the linear model costs the same two GEMMs.",
        "",
        "**Proposal G — the rest of `scale_by_newton`'s O(n²) bookkeeping.** It no longer "
        "adds a dense zero shift (`damping·I` with a static damping of 0) or tests the "
        "factor entry by entry (one O(n) finiteness test of the direction, plus the pivot "
        "check); it still materializes the Hessian column-wise (`vmap(out_axes=1)`, a "
        "transposed copy of a symmetric matrix) from a linearized `value_and_grad`. The "
        "prototype that also materializes rows and adds the damping on the diagonal only "
        f"runs at {vs('nj_lean_newton', FLOOR)} the floor, against {vs('nj_newton', FLOOR)} "
        "for `nj.newton()`. A further cost (1–2 % in separate 12-sample checks) is the loop "
        "re-evaluating f at the point the line search just tried; optax's "
        "`scale_by_backtracking_linesearch(store_grad=True)` keeps value and gradient in "
        "its state, which `minimize` could read instead of calling `value_and_grad` again "
        "(in optax 0.2.8 that path fails for float32 parameters under `jax_enable_x64`: "
        "its transpose is seeded with a Python float).",
        "",
        "**Proposal A — structured dense curvature for generalized linear models (one "
        "GEMM), low priority for `minimize`.** For `f(w) = Σᵢ ℓᵢ(xᵢᵀw) + ½λ‖w‖²` the "
        "Hessian is `Xᵀ diag(ℓ'') X + λI`; `ℓ''` of a separable output loss is one "
        "Hessian-vector product with a vector of ones on the m outputs and the matrix one "
        f"m·n·n GEMM ({glm.flops / 1e9:.1f} GFLOP, {glm.cpu_ms:.0f} ms of CPU against "
        f"{hess.cpu_ms:.0f} ms for `jax.hessian` alone). Because XLA already hoists the "
        "other GEMM out of the solve loop, a full solve gains only the one hoisted GEMM "
        f"and the m × n copy of X it materializes: the floor with it {vs('floor_glm', FLOOR)}, "
        f"`nj.minimize` with a GLM-Newton transform {vs('nj_glm_newton', 'nj_newton')} the "
        f"default Newton ({speedup('scipy_trust_exact', 'nj_glm_newton')} faster than "
        "scipy trust-exact, whose Hessian callback is compiled alone and pays both GEMMs "
        f"every iteration). The {hess.cpu_ms / glm.cpu_ms:.1f}× per-Hessian gain is real "
        "where the Hessian is formed "
        "outside a loop: one optax `update` per jitted training step, callbacks, "
        "`nj.hessian_matrix`. API if wanted: `nj.glm_objective(features, sample_loss, "
        "l2=...)` (or `features=` on `composite_objective`) whose curvature operator "
        "builds `as_matrix()` this way; `scale_by_newton`, `scale_by_trust_region`, "
        "Gauss–Newton and LM already call `op.as_matrix()`.",
        "",
        "**Exact trust region (in newtonjax).** The subproblem tries the Newton step by "
        "Cholesky and runs the eigen-solver under `lax.cond` only when `H` is not positive "
        "definite or `‖H⁻¹g‖ > Δ` (an interior Newton step *is* the exact solution, Nocedal "
        "& Wright Thm. 4.1 with λ = 0): `eigh` costs "
        f"{eigh.cpu_ms:.0f} ms of CPU against {chol.cpu_ms:.0f} ms for Cholesky and the "
        "solve. The default `initial_radius=None` starts from the Newton step when "
        "`H ≻ 0` (Δ₀ is its length; a unit radius cost one more iteration and an `eigh` "
        f"here), so the trust region takes {it('nj_trust_region')} iterations against the "
        f"floor's {it(FLOOR)}, {boundary} of its {tr_steps} steps needed more than "
        f"Cholesky, and it costs {vs('nj_trust_region', FLOOR)} the floor "
        f"({vs('nj_trust_region', 'nj_newton')} `nj.newton()`; one `nj.trust_region()` "
        f"update at ½w* {tr_it.cpu_ms:.0f} ms against {newton_it.cpu_ms:.0f} ms). It "
        "evaluates f and ∇f once per step, at the trial point, and `minimize` reads them "
        "from its state (Newton's line search evaluates f there and the loop f and ∇f "
        "again).",
        "",
        '**Newton–CG (in newtonjax).** With `cg_rtol=None`, `solver="cg"` stops CG at the '
        "forcing tolerance η = min(0.5, √‖g‖)·‖g‖ of Nocedal & Wright Alg. 7.1: "
        f'`nj.minimize(method="newton_cg")` spent {cg_products} Hessian products where '
        f"scipy Newton-CG spent {scipy_cg_products}, and solves in "
        f"{solve('nj_newton_cg')} against {solve('scipy_newton_cg')} for scipy Newton-CG "
        f"({vs('nj_newton_cg', FLOOR)} the dense floor).",
        "",
        "**Proposal D — BLAS threads for jaxlib's LAPACK on CPU.** jaxlib's CPU "
        "Cholesky, `eigh` and triangular solves call LAPACK from scipy's OpenBLAS, whose "
        "worker threads compete with XLA's own thread pool and other processes. "
        + (
            f"In this run (other processes: {result['other_load']:.2f} cores) OpenBLAS's "
            f"default {chol_mt.blas_threads} threads gave Cholesky + solve "
            f"{chol_mt.median_ms:.0f} ms (wall) against {chol.median_ms:.0f} ms with one "
            f"thread and `eigh` {eigh_mt.median_ms:.0f} against {eigh.median_ms:.0f} ms. "
            if chol_mt and eigh_mt
            else ""
        )
        + "In an earlier run of this script on the same machine with other processes "
        "using 1.37 of the 2 cores, the default threads made Cholesky + solve 345 ms "
        "against 35 ms and `eigh` 4.9 s against 0.30 s (spinning threads descheduled "
        "mid-factorization), which would put the exact trust region near 30 s. The "
        "benchmark runs with one BLAS thread for stable numbers (`--blas-threads 0` keeps "
        "the default). Proposal: the experiment runner should limit BLAS threads when the "
        "cores are shared (threadpoolctl, or `OPENBLAS_NUM_THREADS` before numpy is "
        "imported) and the docs should mention it; on an idle machine the default can be "
        "faster in wall time, as the numbers above may show.",
        "",
        "**Proposal E — compile time.** At n = "
        f"{result['compile_size']} the floor compiles in {ctime('floor'):.1f} s and "
        f'`nj.minimize(method="newton")` in {ctime("newton"):.1f} s '
        "(table above): without the line search "
        f"{ctime('newton_no_ls'):.1f} s, without the eigenvalue fallback "
        f"{ctime('newton_no_fallback'):.1f} s, without both "
        f"{ctime('newton_plain'):.1f} s; the exact trust region {ctime('tr'):.1f} s. "
        + (
            f'At n = {n} compiling `nj.minimize(method="newton")` took '
            f"{row('nj_newton').compile_s:.1f} s against a {row('nj_newton').median:.1f} s "
            "solve. "
            if row("nj_newton")
            else ""
        )
        + "A modified-Cholesky fallback "
        "(N&W Alg. 3.3, Cholesky with an increasing shift τI, a few factorizations in a "
        "`while_loop`) instead of `eigh` would shorten both the compile and the rare "
        "indefinite case. Users who call `nj.minimize` like scipy, without a `jax.jit` "
        "around it, pay the compile once per objective, method, options and loop "
        "settings: the compiled solve is kept"
        + (
            f" (at n = {result['compile_size']} calls after the first took "
            f"{np.median(result['eager'][0]):.3f} s, median of {len(result['eager'][0])}, "
            f"against {1e3 * result['eager'][1]:.1f} ms for the jitted solve)."
            if result["eager"][0]
            else "."
        ),
        "",
        "**Proposal F — which method to suggest.** On this problem matrix-free methods win "
        f"at n = {n}: scipy Newton-CG {solve('scipy_newton_cg')}, optimistix BFGS "
        f"{solve('optx_bfgs')} against {solve(FLOOR)} for the dense floor, because each "
        "needs far fewer than n Hessian-vector products (or none). `minimize`'s "
        '`"trust_region"` default switches from the exact to the Steihaug-CG subproblem '
        "only above n = 1000; the docs should steer problems with cheap products to "
        '`"newton_cg"` or Steihaug-CG well below that size.',
    ]
    return "\n".join(parts) + "\n"


def section_text(result: dict[str, Any], command: str, note: str) -> str:
    info = result["machine"]
    rows = result["rows"]
    main = [r for r in rows if r.group == "main"]
    proto = [r for r in rows if r.group == "prototype"]
    parts = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {info['cpu']}, {info['cores']}; device {info['device']}  ",
        f"Versions: {info['versions']}; XLA_FLAGS {info['xla_flags']}; OpenBLAS threads "
        f"{result['blas_threads']}  ",
        f"Load: other processes used {result['other_load']:.2f} cores on average while this "
        f"ran (load average {result['loadavg_start']} at the start, {result['loadavg_end']} at "
        f"the end); {result['elapsed_s']:.0f} s of compiling and timing in all.  ",
        "Problem: L2-regularized logistic regression `mean(softplus(−y·Xw)) + ½λ‖w‖²`, "
        f"λ = {L2:g}, m = {SAMPLES_PER_FEATURE}n samples, X standard normal, labels from the "
        "logistic model of a random w_true, w0 = 0, float64, seeded. Every contender stops "
        f"at ‖∇f‖∞ ≤ {GTOL:g} (newtonjax with `gtol=0, gtol_abs={GTOL:g}, ftol=0, xtol=0`; "
        "scipy by a callback on the same test, its own tests off; optimistix by its Cauchy "
        f"test with rtol = atol = {OPTX_TOL:g}, which lands below); ‖∇f‖∞ and f are recomputed "
        "independently. Timing: every contender is compiled (trace + lower + XLA compile "
        "of the whole solve; for scipy, of its jitted callbacks) and called once to warm "
        f"up, then timed in round-robin rounds in a seeded random order: at least "
        f"{result['repeats']} samples, more rounds while a size has used under "
        f"{result['min_time']:g} s (at most {MAX_ROUNDS}); where the warm-up round took over "
        f"{LONG_ROUND_S:g} s its calls count as the first sample. Reported: the median "
        "and the minimum (best) wall-clock time and the median of this process's CPU time "
        "(all threads). With other processes on the two cores wall time measures waiting "
        "as much as work, and its medians jump when the load changes mid-run; the ratios in "
        "the targets and the analysis use the best wall time and the median CPU time, the "
        "steadier estimates.",
    ]
    if note:
        parts.append(f"Note: {note}")
    parts += ["", results_table(main), "Targets:", "", targets_text(main)]
    if proto:
        n = proto[0].n
        parts += [
            "Prototype variants (written in this script to measure the proposals below, "
            "**not newtonjax API**), timed in the same rounds as the rows above:",
            "",
            results_table(proto + [r for r in main if r.name == FLOOR and r.n == n]),
        ]
    if result["components"]:
        n = result["analysis_size"]
        parts += [
            f"Per-iteration pieces at n = {n} (each jitted alone, "
            f"{result['component_repeats']} round-robin samples at w = ½w*; "
            "`nj.trust_region()` with its initial radius 1; XLA's flop count covers a loop "
            "body once and does not see LAPACK calls, so Cholesky and `eigh` show ~0; "
            "compiled alone, the Hessian pays both GEMMs, while inside a solve loop XLA "
            "hoists `X·I` out, see the analysis):",
            "",
            components_table(result["components"], n),
            f"Compile time of solve variants at n = {result['compile_size']} (fresh "
            "closures, compiled once each, so single samples):",
            "",
            compile_table(result["compile_rows"], result["compile_size"]),
            "### Analysis (numbers from this run)",
            "",
            analysis_text(result),
        ]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------------------ main


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    analysis_size = max(sizes) if args.analysis else None
    loadavg_start = _loadavg()
    before = _cpu_counters()
    rows: list[Row] = []
    for n in sizes:
        contenders = main_contenders()
        if n == analysis_size:
            contenders += prototype_contenders()
        rows += run_size(n, contenders, args, log)
    components, compile_rows, boundary, eager = [], [], (0, 0), ([], float("nan"))
    hoisted: dict[str, bool] = {}
    if analysis_size:
        components = run_components(analysis_size, args.component_repeats, log)
        boundary = trust_region_boundary_steps(analysis_size)
        compile_rows = run_compile_breakdown(min(sizes), log)
        log("  eager nj.minimize calls ...")
        eager = eager_call_times(min(sizes))
        hoisted = jacobian_gemm_hoisted(min(sizes))
    after = _cpu_counters()
    return {
        "rows": rows,
        "components": components,
        "compile_rows": compile_rows,
        "compile_size": min(sizes),
        "tr_boundary": boundary,
        "eager": eager,
        "hoisted": hoisted,
        "analysis_size": analysis_size,
        "repeats": args.repeats,
        "min_time": args.min_time,
        "component_repeats": args.component_repeats,
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": after[0] - before[0],
        "other_load": _other_load(before, after),
        "loadavg_start": loadavg_start,
        "loadavg_end": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.dense_newton",
        description="Dense Newton on logistic regression: newtonjax vs scipy, optimistix "
        "and a hand-written jitted loop.",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="numbers of features n (m = 5n samples)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed solves per contender and size (after one warm-up)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=5.0,
        help="run more rounds (up to 30) while a size has taken less than this many seconds",
    )
    parser.add_argument(
        "--component-repeats", type=int, default=3, help="timed calls per per-iteration piece"
    )
    parser.add_argument(
        "--analysis",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prototype variants and per-iteration pieces at the largest size",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="OpenBLAS/LAPACK threads during the run (0: leave the default)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"replace the '{SECTION_TITLE}' section of {RESULTS_PATH.name}",
    )
    parser.add_argument("--note", default="", help="a note recorded in the written section")
    args = parser.parse_args(argv)  # fmt: skip
    if args.repeats < 1 or args.component_repeats < 1:
        parser.error("--repeats and --component-repeats must be >= 1")
    if any(n < 2 for n in args.sizes):
        parser.error("--sizes must be >= 2")
    return args


def write_section(text: str, path: Path = RESULTS_PATH) -> None:
    """Replace (or append) this benchmark's section of ``RESULTS.md``."""
    replace_section(text, SECTION_TITLE, path)


def main(argv: Sequence[str] | None = None) -> int:
    global _DEFAULT_BLAS_THREADS
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    # jaxlib's CPU Cholesky, eigh and triangular solves call LAPACK from scipy's
    # OpenBLAS, whose spinning worker threads fight XLA's own thread pool and any
    # other process for the cores: on a loaded 2-core machine that made eigh 10–100×
    # slower and erratic. One BLAS thread is the default here (see the section).
    _DEFAULT_BLAS_THREADS = _current_blas_threads()
    threads = None if args.blas_threads == 0 else args.blas_threads
    with _blas_threads(threads):
        result = run(args, log)
    result["blas_threads"] = (
        f"{threads} (threadpoolctl; the default was {_DEFAULT_BLAS_THREADS})"
        if threads and _threadpoolctl()
        else f"left at the default ({_DEFAULT_BLAS_THREADS})"
    )
    command = "python -m experiments.benchmarks.dense_newton " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = section_text(result, command.strip(), args.note)
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
