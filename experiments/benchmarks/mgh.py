"""Robustness and effort on the Moré–Garbow–Hillstrom test set: newtonjax vs scipy.

The 40 standard cases of ``newtonjax.experiments.problems.mgh`` (the 35 problems of
Moré, Garbow & Hillstrom 1981 with the paper's starting points; see that module for
the dimension variants) are each solved once, float64, at **default settings**,
nothing tuned per problem, by

1. newtonjax ``nj.minimize(f, x0, method=...)`` for ``trust_region``, ``newton`` and
   ``newton_cg``, with ``f = ‖r‖²`` (the paper's objective), and
   ``nj.least_squares(r, x0)`` (Levenberg–Marquardt, which minimizes ``½‖r‖²``);
2. scipy ``minimize(f, x0, jac=∇f, hess=∇²f, method="trust-exact")`` and
   ``method="Newton-CG"`` (the same ``f``), and ``least_squares(r, x0, jac=J,
   method="lm")`` (MINPACK ``lmder``), with jitted JAX callbacks.

Each answer is scored by :func:`mgh.outcome` on ``f = ‖r(x)‖²`` recomputed from the
returned point: *solved* (``f <= f* + 1e-5·|f*| + 1e-10``), *local* (within the
same tolerance of another local minimum the paper reports) or *failed*.

Effort: iterations (newtonjax ``num_steps``, rejected steps included; scipy ``nit``
for ``minimize``, which also counts rejected trust-region steps, and ``njev`` for
``lm``, one Jacobian per iteration), and f / g / H evaluations: newtonjax
``num_fun`` / ``num_grad`` / ``num_curvature / n`` (dense-Hessian or dense-Jacobian
equivalents: a dense ``n × n`` matrix counts ``n`` products; CG counts one product
per step); scipy ``nfev`` / ``njev`` / ``nhev`` (``least_squares``: residual and
Jacobian evaluations, no Hessian).

Run (about 10 minutes on 2 cores, almost all of it compiling)::

    python -m experiments.benchmarks.mgh            # print the tables
    python -m experiments.benchmarks.mgh --write    # and write RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import newtonjax as nj  # noqa: E402
from experiments.benchmarks._common import (  # noqa: E402
    machine_info,
    package_versions,
    replace_section,
)
from newtonjax.experiments.problems import mgh  # noqa: E402

SECTION_TITLE = "## Moré–Garbow–Hillstrom robustness and effort"
NJ_METHODS = ("trust_region", "newton", "newton_cg", "levenberg_marquardt")
SCIPY_METHODS = ("trust-exact", "Newton-CG", "lm")
SOLVERS = tuple(f"nj {m}" for m in NJ_METHODS) + tuple(f"scipy {m}" for m in SCIPY_METHODS)
LOOSE_ATOL = 1e-6  # the looser floor of the second count (see the section text)
TARGETS = {"nj trust_region": 38, "nj newton": 36, "nj levenberg_marquardt": 38}


def _f(p, x) -> float:
    r = np.asarray(jax.jit(p.residual)(jnp.asarray(x, jnp.float64)), np.float64)
    return float(r @ r)


def _first_solved(p, values) -> int | None:
    """The first iteration whose ``f = ‖r‖²`` counts as solved (None if none does)."""
    for k, f in enumerate(values):
        if np.isfinite(f) and mgh.outcome(p, f) == "solved":
            return k
    return None


def solve_newtonjax(p, method: str) -> dict:
    x0 = jnp.asarray(p.x0)
    history = method == "trust_region"  # f per iteration, for iterations-to-solved
    if method == "levenberg_marquardt":
        res = jax.jit(lambda x: nj.least_squares(p.residual, x))(x0)
    else:
        res = jax.jit(
            lambda x: nj.minimize(mgh.objective(p), x, method=method, history=history)
        )(x0)
    x = np.asarray(res.params)
    first = None
    if history:
        values = np.asarray(res.history["value"])[: int(res.num_steps) + 1]
        first = _first_solved(p, values)
    return {
        "first_solved": first,
        "x": x,
        "iters": int(res.num_steps),
        "nfev": int(res.num_fun),
        "ngev": int(res.num_grad),
        "nhev": float(res.num_curvature) / p.n,
        "message": res.message,
    }


def solve_scipy(p, method: str, fns) -> dict:
    from scipy.optimize import least_squares, minimize

    fun, grad, hess, residual, jac = fns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if method == "lm":
                res = least_squares(residual, p.x0, jac=jac, method="lm")
                return {
                    "x": res.x,
                    "iters": int(res.njev),
                    "nfev": int(res.nfev),
                    "ngev": int(res.njev),
                    "nhev": 0.0,
                    "message": str(res.message),
                }
            values = [fun(p.x0)]
            res = minimize(
                fun, p.x0, jac=grad, hess=hess, method=method,
                callback=lambda xk: values.append(fun(xk)),
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - a crash is a failed solve, recorded
            return {
                "x": np.full(p.n, np.nan),
                "iters": 0,
                "nfev": 0,
                "ngev": 0,
                "nhev": 0.0,
                "message": f"raised {type(err).__name__}: {err}",
            }
    return {
        "first_solved": _first_solved(p, values),
        "x": res.x,
        "iters": int(res.nit),
        "nfev": int(res.nfev),
        "ngev": int(getattr(res, "njev", 0)),
        "nhev": float(getattr(res, "nhev", 0)),
        "message": str(res.message),
    }


def _scipy_callbacks(p):
    f = mgh.objective(p)
    fun, grad, hess = jax.jit(f), jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
    residual, jac = jax.jit(p.residual), jax.jit(jax.jacfwd(p.residual))

    def np_(g):
        return lambda x: np.asarray(g(jnp.asarray(x, jnp.float64)), np.float64)

    return (lambda x: float(fun(jnp.asarray(x))), np_(grad), np_(hess), np_(residual), np_(jac))


def run(cases) -> list[dict]:
    rows = []
    for p in cases:
        row = {"case": p, "results": {}}
        for m in NJ_METHODS:
            row["results"][f"nj {m}"] = solve_newtonjax(p, m)
        fns = _scipy_callbacks(p)
        for m in SCIPY_METHODS:
            row["results"][f"scipy {m}"] = solve_scipy(p, m, fns)
        for res in row["results"].values():
            res["f"] = _f(p, res["x"]) if np.all(np.isfinite(res["x"])) else float("nan")
            res["outcome"] = mgh.outcome(p, res["f"])
            res["loose"] = mgh.outcome(p, res["f"], atol=LOOSE_ATOL)
        rows.append(row)
        print(
            f"{p.key}: " + "  ".join(f"{s.split()[1]} {_cell(row['results'][s])}" for s in SOLVERS),
            flush=True,
        )
    return rows


def _cell(res) -> str:
    mark = {"solved": "", "local": " L", "failed": " ✗"}[res["outcome"]]
    return f"{res['iters']}{mark}"


def _counts(rows, solver):
    out = [r["results"][solver]["outcome"] for r in rows]
    return {k: out.count(k) for k in ("solved", "local", "failed")}


def solver_table(rows) -> str:
    head = (
        "| solver | solved | local | failed | solved at floor 1e-6 | iterations | f evals "
        "| g evals | H evals |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = ""
    for s in SOLVERS:
        c = _counts(rows, s)
        res = [r["results"][s] for r in rows]
        target = f" (target ≥ {TARGETS[s]})" if s in TARGETS else ""
        body += (
            f"| {s} | {c['solved']}{target} | {c['local']} | {c['failed']} "
            f"| {sum(x['loose'] == 'solved' for x in res)} "
            f"| {sum(x['iters'] for x in res)} | {sum(x['nfev'] for x in res)} "
            f"| {sum(x['ngev'] for x in res)} | {sum(x['nhev'] for x in res):.0f} |\n"
        )
    return head + body


def case_table(rows) -> str:
    head = (
        "| case | n | m | f* | "
        + " | ".join(s.replace("nj ", "").replace("scipy ", "scipy ") for s in SOLVERS)
        + " |\n|---|---:|---:|---:|"
        + "---:|" * len(SOLVERS)
        + "\n"
    )
    body = "".join(
        f"| {r['case'].key} | {r['case'].n} | {r['case'].m} | {r['case'].f_star:.6g} | "
        + " | ".join(_cell(r["results"][s]) for s in SOLVERS)
        + " |\n"
        for r in rows
    )
    return head + body


def misses_table(rows) -> str:
    head = (
        "| solver | case | outcome | f | f* | iterations | message |\n"
        "|---|---|---|---:|---:|---:|---|\n"
    )
    body = ""
    for s in SOLVERS:
        for r in rows:
            res, p = r["results"][s], r["case"]
            if res["outcome"] != "solved":
                body += (
                    f"| {s} | {p.key} | {res['outcome']} | {res['f']:.6e} | {p.f_star:.6g} "
                    f"| {res['iters']} | {res['message']} |\n"
                )
    return head + body


def summary(rows) -> str:
    lines = []
    for s in SOLVERS:
        c = _counts(rows, s)
        loose = sum(r["results"][s]["loose"] == "solved" for r in rows)
        lines.append(
            f"- {s}: {c['solved']}/{len(rows)} solved, {c['local']} local, {c['failed']} "
            f"failed ({loose} solved at the 1e-6 floor)."
        )
    common = [
        r
        for r in rows
        if r["results"]["nj trust_region"]["outcome"] == "solved"
        and r["results"]["scipy trust-exact"]["outcome"] == "solved"
    ]
    ours = [r["results"]["nj trust_region"]["iters"] for r in common]
    theirs = [r["results"]["scipy trust-exact"]["iters"] for r in common]
    fewer = sum(a < b for a, b in zip(ours, theirs, strict=True))
    more = sum(a > b for a, b in zip(ours, theirs, strict=True))
    lines.append(
        f"- trust-region iterations on the {len(common)} cases both solve: newtonjax "
        f"`trust_region` {sum(ours)} vs scipy `trust-exact` {sum(theirs)} "
        f"(median {np.median(ours) if ours else float('nan'):g} vs "
        f"{np.median(theirs) if theirs else float('nan'):g}; newtonjax fewer on {fewer}, "
        f"more on {more})."
    )
    ours_first = [r["results"]["nj trust_region"].get("first_solved") for r in common]
    theirs_first = [r["results"]["scipy trust-exact"].get("first_solved") for r in common]
    if all(k is not None for k in ours_first + theirs_first):
        lines.append(
            f"- iterations until f first counts as solved, same cases: newtonjax "
            f"`trust_region` {sum(ours_first)} vs scipy `trust-exact` {sum(theirs_first)} "
            "(the rest of each count is spent meeting the stopping tests: newtonjax's "
            "default relative gradient 1e-10 / xtol 1e-12 against scipy's absolute "
            "‖∇f‖ ≤ 1e-5)."
        )
    return "\n".join(lines)


def code_version() -> str:
    """The commit of the checkout, and whether ``newtonjax/`` differs from it."""
    root = __file__.rsplit("/experiments/", 1)[0]

    def git(*args):
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "newtonjax")
    return f"commit {sha}" + (" with uncommitted changes in newtonjax/" if dirty else "")


def section(rows, command: str, seconds: float) -> str:
    info = machine_info()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = package_versions(("newtonjax", "jax", "jaxlib", "scipy", "numpy"))
    return (
        f"{SECTION_TITLE}\n\n"
        f"Command: `{command}`  \nDate: {date}  \n"
        f"Machine: {info['cpu']}, {info['cores']}; device {info['device']}  \n"
        f"Versions: {versions}; XLA_FLAGS {info['xla_flags']}  \n"
        f"Code: {code_version()}  \n"
        f"Run: {seconds:.0f} s in all (mostly compiling).\n\n"
        "The 40 standard cases of Moré, Garbow & Hillstrom (1981), "
        "`newtonjax.experiments.problems.mgh`, each solver at its default settings, "
        "float64. newtonjax `minimize` and scipy `minimize` get f = ‖r‖² (the paper's "
        "objective) with exact derivatives; `least_squares` gets r and its Jacobian. "
        "Solved: f ≤ f* + 1e-5·|f*| + 1e-10, f recomputed from the returned point; local: "
        "within that tolerance of another local minimum the paper reports "
        '(`mgh.outcome`). "Solved at floor 1e-6" counts f ≤ f* + 1e-5·|f*| + 1e-6 '
        "instead: it accepts the early stops of scipy's `minimize` methods, whose "
        "default gradient tolerance is an absolute 1e-5 (`trust-exact` `gtol`) or a "
        "step tolerance (`Newton-CG` `xtol`). Iterations: newtonjax `num_steps` "
        "(rejected steps included), scipy `nit` (`lm`: `njev`). H evals: newtonjax "
        "`num_curvature / n` (dense equivalents; CG counts one product per step), "
        "scipy `nhev`. Default iteration caps: newtonjax min(100·(n + 1), 1000); scipy "
        "`trust-exact` and `Newton-CG` 200·n; `lm` 100·n residual evaluations.\n\n"
        + summary(rows)
        + "\n\nTotals over the 40 cases:\n\n"
        + solver_table(rows)
        + "\nIterations per case (L: ended in another local minimum the paper reports; "
        "✗: failed):\n\n"
        + case_table(rows)
        + "\nCases not solved, with the solver's stopping message:\n\n"
        + misses_table(rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=None, help="case keys (default all 40)")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md")
    args = parser.parse_args(argv)
    cases = [mgh.case(k) for k in args.cases] if args.cases else list(mgh.CASES)
    start = time.perf_counter()
    rows = run(cases)
    seconds = time.perf_counter() - start
    print(summary(rows))
    print(solver_table(rows))
    print(misses_table(rows))
    if args.write:
        command = "python -m experiments.benchmarks.mgh" + (
            f" --cases {' '.join(args.cases)}" if args.cases else ""
        )
        replace_section(section(rows, command + " --write", seconds), SECTION_TITLE)
        print("wrote", SECTION_TITLE)


if __name__ == "__main__":
    main()
