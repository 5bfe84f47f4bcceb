"""Accuracy and effort on the NIST StRD nonlinear regressions: newtonjax, scipy, optimistix.

Every case (27 problems × the two NIST starting points) is solved by

1. newtonjax: ``nj.least_squares(method="levenberg_marquardt", gtol=0)``, float64
   defaults otherwise (as ``tests/test_nist_lm.py``);
2. scipy: ``scipy.optimize.least_squares(method="lm")`` (MINPACK ``lmder``) with
   ``ftol = xtol = gtol = 1e-15`` and jitted JAX residual and Jacobian callbacks;
3. optimistix: ``optx.least_squares`` with ``optx.LevenbergMarquardt(rtol=1e-10,
   atol=1e-10)`` and up to 10,000 steps (at 1e-15 its Cauchy test never stops
   several cases that have converged; MGH10 from start 1 needs about 4,800 steps);

and scored by the worst log relative error (LRE, McCullough 1998) of its parameters
against the certified values: the number of correct significant digits, at most 11.
Effort is counted in iterations (newtonjax: loop iterations, rejected steps
included; scipy: Jacobian evaluations ``njev``, with residual evaluations ``nfev``;
optimistix: ``num_steps``). A case passes at LRE ≥ 6.

Run (about 3 minutes on 2 cores, mostly compiling)::

    pip install -e ".[bench]"
    python -m experiments.benchmarks.nist_accuracy --write
"""

from __future__ import annotations

import argparse
import datetime
import time

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
from newtonjax.experiments.problems import nist  # noqa: E402

SECTION_TITLE = "## NIST StRD accuracy and effort"
MIN_LRE = 6.0
MAXITER = 2000
TOL = 1e-15
OPTX_TOL = 1e-10
OPTX_MAX_STEPS = 10_000


def solve_newtonjax(problem) -> list[tuple[np.ndarray, int]]:
    def solve(start):
        res = nj.least_squares(problem.residual_fn, start, maxiter=MAXITER, gtol=0.0)
        return res.params, res.num_steps

    starts = jnp.stack([jnp.asarray(s, jnp.float64) for s in problem.starts])
    params, steps = jax.jit(jax.vmap(solve))(starts)
    return [(np.asarray(p), int(k)) for p, k in zip(params, steps, strict=True)]


def solve_scipy(problem) -> list[tuple[np.ndarray, int, int]]:
    from scipy.optimize import least_squares

    residual = jax.jit(problem.residual_fn)
    jacobian = jax.jit(jax.jacfwd(problem.residual_fn))
    out = []
    for start in problem.starts:
        res = least_squares(
            lambda b: np.asarray(residual(b)),
            np.asarray(start, np.float64),
            jac=lambda b: np.asarray(jacobian(b)),
            method="lm",
            ftol=TOL,
            xtol=TOL,
            gtol=TOL,
            max_nfev=20_000,
        )
        out.append((res.x, int(res.njev), int(res.nfev)))
    return out


def solve_optimistix(problem) -> list[tuple[np.ndarray, int]]:
    import optimistix as optx

    solver = optx.LevenbergMarquardt(rtol=OPTX_TOL, atol=OPTX_TOL)

    def solve(start):
        sol = optx.least_squares(
            lambda b, _: problem.residual_fn(b),
            solver,
            start,
            max_steps=OPTX_MAX_STEPS,
            throw=False,
        )
        return sol.value, sol.stats["num_steps"]

    starts = jnp.stack([jnp.asarray(s, jnp.float64) for s in problem.starts])
    params, steps = jax.jit(jax.vmap(solve))(starts)
    return [(np.asarray(p), int(k)) for p, k in zip(params, steps, strict=True)]


def run(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        problem = nist.load(name)
        ours = solve_newtonjax(problem)
        scipy = solve_scipy(problem)
        optx = solve_optimistix(problem)
        certified = problem.certified_params
        for k in range(len(problem.starts)):
            rows.append(
                {
                    "case": f"{name}/{k + 1}",
                    "difficulty": problem.difficulty,
                    "nj_lre": nist.min_lre(ours[k][0], certified),
                    "nj_iters": ours[k][1],
                    "scipy_lre": nist.min_lre(scipy[k][0], certified),
                    "scipy_njev": scipy[k][1],
                    "scipy_nfev": scipy[k][2],
                    "optx_lre": nist.min_lre(optx[k][0], certified),
                    "optx_iters": optx[k][1],
                }
            )
        print(f"{name}: " + "; ".join(f"{r['case']} {r['nj_lre']:.1f}" for r in rows[-2:]))
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| case | difficulty | newtonjax LRE | iterations | scipy `lm` LRE | njev / nfev "
        "| optimistix LRE | steps |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
    )

    def cell(lre):
        return f"{lre:.1f}" if lre >= MIN_LRE else f"**{lre:.1f}**"

    body = "".join(
        f"| {r['case']} | {r['difficulty']} | {cell(r['nj_lre'])} | {r['nj_iters']} "
        f"| {cell(r['scipy_lre'])} | {r['scipy_njev']} / {r['scipy_nfev']} "
        f"| {cell(r['optx_lre'])} | {r['optx_iters']} |\n"
        for r in rows
    )
    return head + body


def summary(rows: list[dict]) -> str:
    n = len(rows)

    def line(label, lre_key, effort):
        passes = sum(r[lre_key] >= MIN_LRE for r in rows)
        worst = min(r[lre_key] for r in rows)
        return (
            f"- {label}: {passes}/{n} cases with LRE ≥ {MIN_LRE:g} (worst {worst:.1f}); {effort}."
        )

    return "\n".join(
        [
            line("newtonjax", "nj_lre", f"{sum(r['nj_iters'] for r in rows)} iterations in all"),
            line(
                "scipy `lm`",
                "scipy_lre",
                f"{sum(r['scipy_njev'] for r in rows)} Jacobians and "
                f"{sum(r['scipy_nfev'] for r in rows)} residual evaluations in all",
            ),
            line("optimistix", "optx_lre", f"{sum(r['optx_iters'] for r in rows)} steps in all"),
        ]
    )


def section(rows: list[dict], command: str, seconds: float) -> str:
    info = machine_info()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = package_versions(("newtonjax", "jax", "jaxlib", "optimistix", "scipy", "numpy"))
    return (
        f"{SECTION_TITLE}\n\n"
        f"Command: `{command}`  \nDate: {date}  \n"
        f"Machine: {info['cpu']}, {info['cores']}; device {info['device']}  \n"
        f"Versions: {versions}; XLA_FLAGS {info['xla_flags']}  \n"
        f"Run: {seconds:.0f} s in all.\n\n"
        "Worst log relative error of the parameters against NIST's certified values "
        f"(correct significant digits, at most 11; **bold** below {MIN_LRE:g}). "
        "newtonjax: `nj.least_squares` (Levenberg–Marquardt, `gtol=0`, float64 "
        f"defaults otherwise); scipy: `least_squares(method='lm')`, ftol = xtol = gtol = "
        f"{TOL:g}; at most {MAXITER} iterations each; optimistix: "
        f"`LevenbergMarquardt(rtol={OPTX_TOL:g}, atol={OPTX_TOL:g})`, at most {OPTX_MAX_STEPS} "
        "steps (tighter tolerances keep it from stopping on cases it has solved).\n\n"
        + summary(rows)
        + "\n\n"
        + table(rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=None, help="NIST names (default all 27)")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md")
    args = parser.parse_args(argv)
    names = args.problems or nist.names()
    start = time.perf_counter()
    rows = run(names)
    seconds = time.perf_counter() - start
    print(summary(rows))
    if args.write:
        command = "python -m experiments.benchmarks.nist_accuracy" + (
            f" --problems {' '.join(args.problems)}" if args.problems else ""
        )
        replace_section(section(rows, command + " --write", seconds), SECTION_TITLE)
        print("wrote", SECTION_TITLE)


if __name__ == "__main__":
    main()
