"""Curvature-product benchmark: Hessian and GGN products against one gradient.

Purpose: measure what a curvature product costs in units of one gradient, on a
~100k-parameter MLP 784-128-128-10 (tanh hidden units, parameters a list of
``{"W", "b"}`` dicts) with a softmax cross-entropy loss averaged over a batch of 512
random inputs and integer labels, in float32:

1. ``jax.grad(loss)`` — the unit;
2. ``nj.hvp(loss, params, v, x, labels)`` — forward-over-reverse, target ≤ 1.7×;
3. ``nj.ggn_vp(model, xent, params, v, x)`` — ``Jᵀ ∇²ℓ J v``, target ≤ 1.45×;
4. the *marginal* product of a linearized operator: one jitted function builds
   ``nj.hessian_operator`` (or ``nj.ggn_operator``) and applies ``k`` sequential
   products (a power iteration in ``lax.fori_loop``, so XLA cannot batch them into
   one matrix product); marginal cost ``(t(k=11) − t(k=1)) / 10``, target ≤ 1.1×.

Every function is jitted, warmed up, and timed with ``block_until_ready``; the
functions are called round-robin (in a seeded random order per round), so a load
change on a shared machine hits all of them alike, and the table reports the median
and the interquartile range over the rounds. The marginal cost is the median of the
per-round differences ``(t₁₁ − t₁) / 10``. Next to the measured ratio the table gives
the ratio of floating-point operations that XLA's cost analysis counts in the
compiled programs, which separates a cost that is in the mathematics (matrix
products that must be done) from one that is overhead.

With ``--variants`` (the default) a second table times other ways to compute the same
products — reverse-over-reverse and reverse-over-forward Hessian products, a GGN
product with the closed-form softmax Hessian ``(diag p − p pᵀ) u``. These are
prototypes written for this comparison, not newtonjax API.

A third table repeats the main cases in a child process with extra ``XLA_FLAGS``
(``--compare-xla-flags``; by default YNNPACK fusions off, see ``NOTES``).

Expected result on an idle 2-core CPU: about 1.65× (hvp), 1.45× (ggn_vp) and 1.0×
(both marginal products); the flop ratios are 1.75×, 1.54×, 1.21× and 1.07×, and
the measured ratios move towards them when other processes load the cores.

Runtime: about 40 s on 2 CPU cores (100 rounds, both processes, compiles included).

Command::

    python -m experiments.benchmarks.curvature_products [--batch 512] [--repeats 100]
        [--dtype float32] [--activation tanh] [--no-variants]
        [--compare-xla-flags FLAGS] [--write] [--note TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmarks._common import cpu_counters as _cpu_counters
from experiments.benchmarks._common import machine_info as _machine_info
from experiments.benchmarks._common import other_load as _other_load
from experiments.benchmarks._common import replace_section

SIZES = (784, 128, 128, 10)
K_SHORT = 1
K_LONG = 11
TARGETS = {"hvp": 1.7, "ggn_vp": 1.45, "marginal": 1.1}
SECTION_TITLE = "## Curvature products (Hessian / GGN vs gradient)"
RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n"
ACTIVATIONS = ("tanh", "relu")
# XLA:CPU in jaxlib 0.10 routes dots and element-wise chains through YNNPACK fusions;
# on the benchmark machine that made every program slower (see NOTES). An empty
# fusion-type list turns them off. Timed in a second process for comparison only.
COMPARE_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


# ------------------------------------------------------------------------ problem


def init_mlp(key, sizes: Sequence[int], dtype) -> list[dict[str, Any]]:
    """LeCun-normal weights and zero biases for an MLP with layer widths ``sizes``."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "W": jax.random.normal(k, (m, n), dtype) / np.sqrt(m).astype(dtype),
            "b": jnp.zeros((n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params: list[dict[str, Any]], x, activation: str = "tanh"):
    """Logits of the MLP: affine layers with ``activation`` between them."""
    import jax
    import jax.numpy as jnp

    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    h = x
    for layer in params[:-1]:
        h = act(h @ layer["W"] + layer["b"])
    return h @ params[-1]["W"] + params[-1]["b"]


def mean_xent(logits, labels):
    """Softmax cross-entropy with integer labels, averaged over the batch."""
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def closed_form_xent_hvp(logits, labels, u):
    """``∇²ℓ(z) u`` of :func:`mean_xent` in closed form: ``(diag p − p pᵀ) u / B``.

    Prototype for the comparison only (Martens & Grosse 2015, §A; Schraudolph 2002).
    """
    import jax

    del labels  # the softmax Hessian does not depend on the labels
    p = jax.nn.softmax(logits, axis=-1)
    pu = p * u
    return (pu - p * pu.sum(axis=-1, keepdims=True)) / logits.shape[0]


@dataclasses.dataclass(frozen=True)
class Problem:
    params: Any
    v: Any
    x: Any
    labels: Any
    activation: str

    @property
    def num_params(self) -> int:
        import jax

        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.params))

    def model(self, params, x):
        return mlp(params, x, self.activation)

    def loss(self, params, x, labels):
        return mean_xent(self.model(params, x), labels)


def make_problem(batch: int, dtype: str, activation: str, seed: int = 0) -> Problem:
    import jax

    k_params, k_x, k_y, k_v = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = init_mlp(k_params, SIZES, dtype)
    leaves, treedef = jax.tree.flatten(params)
    v_keys = jax.random.split(k_v, len(leaves))
    v = jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape, dtype) for k, p in zip(v_keys, leaves, strict=True)]
    )
    v = _normalize(v)
    x = jax.random.normal(k_x, (batch, SIZES[0]), dtype)
    labels = jax.random.randint(k_y, (batch,), 0, SIZES[-1])
    return Problem(params, v, x, labels, activation)


def _normalize(tree):
    """``tree / ‖tree‖`` (unchanged if zero): keeps a power iteration finite."""
    import jax
    import jax.numpy as jnp

    sq = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))
    norm = jnp.sqrt(sq)
    scale = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree.map(lambda leaf: leaf * scale.astype(leaf.dtype), tree)


# -------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Case:
    """One jitted function to time, with its arguments."""

    name: str
    fn: Callable
    args: tuple
    flops_fn: Callable | None = None  # a function whose XLA flops stand for one call


def _chain(matvec: Callable, v, k: int, unrolled: bool = False):
    """``k`` sequential normalized products ``v ← A v / ‖A v‖``."""
    import jax

    if unrolled:  # only for XLA's cost analysis, which counts a loop body once
        for _ in range(k):
            v = _normalize(matvec(v))
        return v
    return jax.lax.fori_loop(0, k, lambda _, u: _normalize(matvec(u)), v)


def build_cases(prob: Problem, variants: bool) -> tuple[list[Case], list[Case]]:
    """The newtonjax cases and, if ``variants``, the prototype variants."""
    import jax

    import newtonjax as nj

    loss, model = prob.loss, prob.model
    full = (prob.params, prob.v, prob.x, prob.labels)

    def grad_fn(params, v, x, labels):
        del v
        return jax.grad(loss)(params, x, labels)

    def hvp_fn(params, v, x, labels):
        return nj.hvp(loss, params, v, x, labels)

    def ggn_fn(params, v, x, labels):
        return nj.ggn_vp(model, lambda z: mean_xent(z, labels), params, v, x)

    def hess_chain(k, unrolled=False):
        def fn(params, v, x, labels):
            op = nj.hessian_operator(loss, params, x, labels)
            return _chain(op.matvec, v, k, unrolled)

        return fn

    def ggn_chain(k, unrolled=False):
        def fn(params, v, x, labels):
            op = nj.ggn_operator(model, lambda z: mean_xent(z, labels), params, x)
            return _chain(op.matvec, v, k, unrolled)

        return fn

    api = [
        Case("grad", grad_fn, full),
        Case("hvp", hvp_fn, full),
        Case("ggn_vp", ggn_fn, full),
        Case(f"hess_k{K_SHORT}", hess_chain(K_SHORT), full, hess_chain(K_SHORT, True)),
        Case(f"hess_k{K_LONG}", hess_chain(K_LONG), full, hess_chain(2, True)),
        Case(f"ggn_k{K_SHORT}", ggn_chain(K_SHORT), full, ggn_chain(K_SHORT, True)),
        Case(f"ggn_k{K_LONG}", ggn_chain(K_LONG), full, ggn_chain(2, True)),
    ]
    if not variants:
        return api, []

    # ---- prototypes, not newtonjax API -------------------------------------------
    def hvp_rev_rev(params, v, x, labels):
        g = functools.partial(jax.grad(loss), x=x, labels=labels)
        return jax.vjp(g, params)[1](v)[0]  # Hᵀ v = H v

    def hvp_rev_fwd(params, v, x, labels):
        def directional(p):
            return jax.jvp(lambda q: loss(q, x, labels), (p,), (v,))[1]

        return jax.grad(directional)(params)

    def hvp_linearize(params, v, x, labels):
        return nj.hessian_operator(loss, params, x, labels).matvec(v)

    def ggn_jvp_vjp_closed(params, v, x, labels):
        logits, jv = jax.jvp(lambda p: model(p, x), (params,), (v,))
        _, vjp_fn = jax.vjp(lambda p: model(p, x), params)
        return vjp_fn(closed_form_xent_hvp(logits, labels, jv))[0]

    def ggn_linearize_closed(params, v, x, labels):
        logits, jvp_fn = jax.linearize(lambda p: model(p, x), params)
        transpose = jax.linear_transpose(jvp_fn, params)
        return transpose(closed_form_xent_hvp(logits, labels, jvp_fn(v)))[0]

    extra = [
        Case("hvp: reverse-over-reverse vjp(grad f)", hvp_rev_rev, full),
        Case("hvp: reverse-over-forward grad(jvp f)", hvp_rev_fwd, full),
        Case("hvp: nj.hessian_operator(...).matvec, one product", hvp_linearize, full),
        Case("ggn: jax.jvp + jax.vjp, closed-form softmax Hessian", ggn_jvp_vjp_closed, full),
        Case("ggn: linearize + transpose, closed-form softmax Hessian", ggn_linearize_closed, full),
    ]
    return api, extra


# ------------------------------------------------------------------------- timing


def xla_flops(fn: Callable, args: tuple) -> float:
    """Floating-point operations XLA's cost analysis counts in ``jit(fn)(*args)``."""
    import jax

    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def time_round_robin(
    cases: Sequence[Case], repeats: int, warmup: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seconds per call of each case, over ``repeats`` rounds in random order."""
    import jax

    jitted = {c.name: (jax.jit(c.fn), c.args) for c in cases}
    for fn, args in jitted.values():
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    names = list(jitted)
    times = {name: np.empty(repeats) for name in names}
    rng = np.random.default_rng(seed)
    for r in range(repeats):
        for i in rng.permutation(len(names)):
            fn, args = jitted[names[i]]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[names[i]][r] = time.perf_counter() - t0
    return times


@dataclasses.dataclass
class Row:
    operation: str
    median_ms: float
    q25_ms: float
    q75_ms: float
    ratio: float
    flop_ratio: float
    target: float | None = None
    vs: str = ""  # for variants: ratio to the newtonjax counterpart

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "—"
        return "pass" if self.ratio <= self.target else "FAIL"


def _stats(samples: np.ndarray) -> tuple[float, float, float]:
    q25, med, q75 = np.percentile(samples, [25, 50, 75]) * 1e3
    return float(med), float(q25), float(q75)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    prob = make_problem(args.batch, args.dtype, args.activation, args.seed)
    api, extra = build_cases(prob, args.variants)
    cases = api + extra

    t_start = time.perf_counter()
    flops = {c.name: xla_flops(c.flops_fn or c.fn, c.args) for c in cases}
    cpu_before = _cpu_counters()
    times = time_round_robin(cases, args.repeats, args.warmup, args.seed)
    other_load = _other_load(cpu_before, _cpu_counters())
    elapsed = time.perf_counter() - t_start

    g_med = float(np.median(times["grad"]))
    g_flops = flops["grad"]

    def row(name, label, target=None, vs_name=None):
        med, q25, q75 = _stats(times[name])
        r = Row(label, med, q25, q75, med / (g_med * 1e3), flops[name] / g_flops, target)
        if vs_name is not None:
            r.vs = f"{np.median(times[name]) / np.median(times[vs_name]):.2f}×"
        return r

    def marginal_row(prefix, label):
        short, long_ = times[f"{prefix}_k{K_SHORT}"], times[f"{prefix}_k{K_LONG}"]
        med, q25, q75 = _stats((long_ - short) / (K_LONG - K_SHORT))  # paired per round
        # flops: unrolled k=2 minus k=1 is one more product
        marg_flops = flops[f"{prefix}_k{K_LONG}"] - flops[f"{prefix}_k{K_SHORT}"]
        return Row(
            label, med, q25, q75, med / (g_med * 1e3), marg_flops / g_flops, TARGETS["marginal"]
        )

    rows = [
        row("grad", "gradient `jax.grad(loss)`"),
        row("hvp", "`nj.hvp` (jvp of grad)", TARGETS["hvp"]),
        row("ggn_vp", "`nj.ggn_vp`", TARGETS["ggn_vp"]),
        marginal_row("hess", "`nj.hessian_operator` marginal product"),
        marginal_row("ggn", "`nj.ggn_operator` marginal product"),
    ]
    raw = [
        row(f"hess_k{K_SHORT}", f"`nj.hessian_operator` build + {K_SHORT} product"),
        row(f"hess_k{K_LONG}", f"`nj.hessian_operator` build + {K_LONG} products"),
        row(f"ggn_k{K_SHORT}", f"`nj.ggn_operator` build + {K_SHORT} product"),
        row(f"ggn_k{K_LONG}", f"`nj.ggn_operator` build + {K_LONG} products"),
    ]
    for r in raw:  # flops of the unrolled programs are not those of the timed loop
        r.flop_ratio = float("nan")
    variant_rows = [
        row(c.name, c.name, vs_name="hvp" if c.name.startswith("hvp") else "ggn_vp") for c in extra
    ]
    return {
        "problem": prob,
        "rows": rows,
        "raw": raw,
        "variants": variant_rows,
        "elapsed_s": elapsed,
        "other_load": other_load,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


# ------------------------------------------------------------------------ report


def _fmt(x: float, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:{spec}}{suffix}"


def markdown_tables(result: dict[str, Any]) -> str:
    head = (
        "| operation | median ms | IQR ms (p25–p75) | ratio to gradient | XLA flop ratio "
        "| target | result |\n|---|---:|---:|---:|---:|---:|---|\n"
    )

    def line(r: Row) -> str:
        return (
            f"| {r.operation} | {r.median_ms:.3f} | {r.q25_ms:.3f}–{r.q75_ms:.3f} "
            f"| {_fmt(r.ratio, '.3f', '×')} | {_fmt(r.flop_ratio, '.2f', '×')} "
            f"| {_fmt(r.target, '.2f', '×') if r.target else '—'} | {r.verdict} |\n"
        )

    out = head + "".join(line(r) for r in result["rows"])
    out += "\nRaw operator timings (the marginal rows are built from these):\n\n" + head
    out += "".join(line(r) for r in result["raw"])
    if result["variants"]:
        out += (
            "\nPrototype variants (written for this comparison, **not newtonjax API**); "
            "the last column is the time relative to the newtonjax function computing the "
            "same product (`nj.hvp` or `nj.ggn_vp`):\n\n"
            "| variant | median ms | IQR ms (p25–p75) | ratio to gradient | XLA flop ratio "
            "| vs newtonjax |\n|---|---:|---:|---:|---:|---:|\n"
        )
        out += "".join(
            f"| {r.operation} | {r.median_ms:.3f} | {r.q25_ms:.3f}–{r.q75_ms:.3f} "
            f"| {r.ratio:.2f}× | {_fmt(r.flop_ratio, '.2f', '×')} | {r.vs} |\n"
            for r in result["variants"]
        )
    return out


def machine_info() -> dict[str, str]:
    import jax
    import jaxlib

    return {
        **_machine_info(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
    }


def findings(result: dict[str, Any]) -> str:
    """Plain-language reading of the main table, generated from the numbers."""
    lines = []
    for r in result["rows"]:
        if r.target is None:
            continue
        if r.ratio <= r.target:
            lines.append(f"- {r.operation}: {r.ratio:.3f}× ≤ {r.target:.2f}×, target met.")
        elif np.isfinite(r.flop_ratio) and r.flop_ratio >= 0.95 * r.target:
            lines.append(
                f"- {r.operation}: {r.ratio:.3f}× > {r.target:.2f}×. XLA counts "
                f"{r.flop_ratio:.2f}× the gradient's flops in this program, so the miss is "
                "arithmetic the product needs, not overhead (see the notes)."
            )
        else:
            lines.append(
                f"- {r.operation}: {r.ratio:.3f}× > {r.target:.2f}× with only "
                f"{r.flop_ratio:.2f}× the gradient's flops: overhead worth investigating."
            )
    return "\n".join(lines)


NOTES = """\
How to read the ratios. Matrix products of the 784-128-128-10 MLP at batch B:
M₁ = B·784·128 multiply-adds (85 % of a forward pass), M₂ = B·128·128,
M₃ = B·128·10; the input x is data, so no gradient flows into it.

- gradient: forward x W₁, h₁W₂, h₂W₃; backward dW₁ = xᵀg₁, dW₂, dh₁, dW₃, dh₂:
  2M₁ + 3M₂ + 3M₃ (XLA counts 261 MFLOP at B = 512).
- `nj.hvp` (jvp of grad): primal forward, the backward pass's activation gradients
  (the primal dW's are dead code that XLA removes), and the tangents of both passes:
  forward tangent x dW₁, backward tangent xᵀ dg₁, 6M₂, 6M₃; total 3M₁ + 8M₂ + 8M₃,
  1.75× the gradient's flops. Reverse-over-reverse and reverse-over-forward (variant
  rows) do the same arithmetic and are not faster. The 1.7× target is at this flop
  floor: met on an idle machine, where the gradient's transcendental functions and
  small reductions weigh more, missed narrowly when other processes load the cores
  and the times become flop-bound.
- `nj.ggn_vp`: forward x W₁, J v (x dW₁, …), Jᵀu (xᵀ g₁, …): 3M₁ + 5M₂ + 5M₃, 1.54×
  the flops. The first layer alone costs 3M₁ against the gradient's 2M₁ in any
  evaluation order (one primal, one tangent and one cotangent product with x), so
  1.45× is below the flop floor of an exact GGN product on this network and is met
  only when XLA runs these products relatively faster than the gradient's: measured
  1.43–1.45× on an idle machine, 1.43–1.48× on a loaded one. The loss Hessian on the
  B×10 logits is negligible: jvp of grad of the cross-entropy compiles to a handful
  of element-wise operations, and the closed-form softmax Hessian `(diag p − p pᵀ) u`
  (variant rows) is not faster. On an idle machine those variant rows even come out
  slower with the default XLA flags (1.7× against 1.44× in a 300-round check):
  XLA:CPU's YNNPACK fusion pass groups their J v chain of dots and element-wise
  operations into one library fusion that uses the two cores less well; with the
  fusion off, or when other processes hold the cores, they tie with `nj.ggn_vp`.
- marginal Hessian product: the linear program of the linearized gradient is the
  tangent half of the hvp, 2M₁ + 6M₂ + 6M₃, 1.21× the gradient's flops. The 3M₂ + 3M₃
  beyond the gradient are the second-order cross terms (g₂ dW₂ᵀ and dh₁ᵀ g₂ and their
  layer-3 analogues) that make the Hessian differ from the GGN, so no evaluation
  order brings it under 1.1× in flops. Timed, it is cheaper than its flops (1.00–1.01×
  on an idle machine): the loop body replays stored residuals, so it evaluates no
  tanh, exp or log (checked in the compiled HLO: 14 dots and no transcendental
  function per product), and its matrix products run at a higher rate than the
  gradient's (about 155 against 130 GFLOP/s); on a loaded machine it drifts up to
  the flop ratio, 1.19–1.25×.
- marginal GGN product: J v and Jᵀu only, 2M₁ + 4M₂ + 4M₃, 1.07× the flops.
- XLA flags: the comparison table repeats the main cases with YNNPACK fusions off
  (`--xla_cpu_experimental_ynn_fusion_type=`). On this jaxlib and CPU that made the
  gradient and every product about 10 % faster in A/B runs on an idle machine
  (gradient 2.0–2.1 → 1.8–1.9 ms), lowering the hvp and ggn_vp ratios slightly and
  raising the marginal ones slightly (the gradient gains more than the loop bodies);
  on a loaded machine it made no difference to the gradient and raised the marginal
  ratios. The two processes run one after the other, so a load change between them
  can swamp the effect in a single run. The benchmark keeps XLA's defaults for its
  headline numbers because they are what a user gets; the flag is a candidate for the
  experiment runner's CPU defaults, to be re-checked with each jaxlib upgrade.
"""


def section_text(result: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    info = machine_info()
    prob: Problem = result["problem"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"{SECTION_TITLE}\n",
        f"Command: `{command}`  ",
        f"Date: {date}  ",
        f"Machine: {info['cpu']}, {info['cores']}; device {info['device']}  ",
        f"Versions: jax {info['jax']}, jaxlib {info['jaxlib']}, Python {info['python']}; "
        f"XLA_FLAGS {info['xla_flags']} (XLA's default CPU thread pool, one thread per "
        "usable core)  ",
        f"Problem: MLP {'-'.join(map(str, SIZES))} ({args.activation}), "
        f"{prob.num_params:,} parameters, batch {args.batch}, {args.dtype}, mean softmax "
        f"cross-entropy; {args.repeats} timed rounds after {args.warmup} warm-up calls, "
        f"{result['elapsed_s']:.0f} s of compiling and timing; other processes used "
        f"{result['other_load']:.2f} cores on average while the timing ran.\n",
    ]
    if args.note:
        parts.append(f"Note: {args.note}\n")
    parts += [
        markdown_tables(result),
        "\nFindings:\n",
        findings(result) + "\n",
    ]
    if result.get("compare"):
        parts.append(comparison_table(result, result["compare"]))
    parts += [
        "\n" + NOTES,
    ]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------- XLA-flag comparison


def result_to_json(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "xla_flags": result["xla_flags"],
        "other_load": result["other_load"],
        "rows": [dataclasses.asdict(r) for r in result["rows"]],
    }


def run_with_xla_flags(args: argparse.Namespace, flags: str) -> dict[str, Any] | None:
    """The main cases timed in a child process whose ``XLA_FLAGS`` include ``flags``.

    XLA reads its flags once, when the backend starts, so another setting needs another
    process. Returns ``None`` (with a warning) if the child fails, e.g. because a
    future jaxlib no longer knows the flag.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, "-m", "experiments.benchmarks.curvature_products",
            "--no-variants", "--compare-xla-flags", "",
            "--batch", str(args.batch), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--dtype", args.dtype,
            "--activation", args.activation, "--seed", str(args.seed),
            "--json", str(out),
        ]  # fmt: skip
        env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip())
        proc = subprocess.run(
            cmd, env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not out.exists():
            print(f"warning: run with XLA_FLAGS={flags!r} failed:\n{proc.stderr[-2000:]}")
            return None
        return json.loads(out.read_text())


def comparison_table(result: dict[str, Any], other: dict[str, Any]) -> str:
    flags = other["xla_flags"]
    out = (
        f"Same cases in a second process, run after the first, with `XLA_FLAGS={flags}` "
        f"(other processes used {other['other_load']:.2f} cores meanwhile); "
        '"this run" = the flags above:\n\n'
        "| operation | this run: median ms | this run: ratio | with flag: median ms "
        "| with flag: ratio | target |\n|---|---:|---:|---:|---:|---:|\n"
    )
    for r, o in zip(result["rows"], other["rows"], strict=True):
        target = f"{r.target:.2f}×" if r.target else "—"
        out += (
            f"| {r.operation} | {r.median_ms:.3f} | {r.ratio:.3f}× | {o['median_ms']:.3f} "
            f"| {o['ratio']:.3f}× | {target} |\n"
        )
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.curvature_products",
        description="Time Hessian / GGN products against one gradient on an MLP.",
    )
    parser.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    parser.add_argument("--repeats", type=int, default=100, help="timed rounds (default 100)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up calls (default 3)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="tanh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the prototype variants (default on)",
    )
    parser.add_argument(
        "--compare-xla-flags",
        default=COMPARE_XLA_FLAGS,
        metavar="FLAGS",
        help="also time the main cases in a child process with these XLA_FLAGS added "
        f"(default {COMPARE_XLA_FLAGS!r}, YNNPACK fusions off; '' to skip); write "
        "--compare-xla-flags=--xla_... so that the value is not read as an option",
    )
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS_PATH.name}")
    parser.add_argument("--json", default="", help=argparse.SUPPRESS)  # child-process output
    parser.add_argument("--note", default="", help="a note recorded in the written section")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 1:
        parser.error("--batch, --repeats and --warmup must be >= 1")
    return args


def write_section(text: str, path: Path = RESULTS_PATH) -> None:
    """Replace (or append) this benchmark's section of ``RESULTS.md``."""
    replace_section(text, SECTION_TITLE, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m experiments.benchmarks.curvature_products " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result_to_json(result)))
        return 0
    print(markdown_tables(result))
    print(findings(result))
    if args.compare_xla_flags:
        result["compare"] = run_with_xla_flags(args, args.compare_xla_flags)
        if result["compare"] is not None:
            print("\n" + comparison_table(result, result["compare"]))
    if args.write:
        write_section(section_text(result, args, command.strip()))
        print(f"\nwrote {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
