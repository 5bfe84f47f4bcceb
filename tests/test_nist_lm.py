"""``nj.least_squares(method="levenberg_marquardt")`` on the NIST StRD nonlinear regressions.

Every case (problem × NIST starting point) must reach the certified parameters to at
least ``MIN_LRE`` correct significant digits on its worst parameter (the log relative
error of McCullough 1998). The default run covers the 8 lower-difficulty problems
(16 cases); the full 27 problems (54 cases), with scipy's MINPACK ``lm`` side by side,
are marked slow::

    python -m pytest -s tests/test_nist_lm.py                 # lower difficulty, < 1 min
    python -m pytest -s -m slow tests/test_nist_lm.py         # all 54 cases + scipy

``-s`` shows the table of LRE and iteration counts. One ``jit`` per problem: the two
starts are solved together under ``vmap``.

Tolerances: the defaults (MINPACK's scale-invariant cosine test for ``gtol``, the
relative ``ftol``/``xtol``), so the problems with tiny residuals (Lanczos1–3,
Roszman1) are solved as a user calls them; only ``maxiter`` is raised.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares as scipy_least_squares

import newtonjax as nj
from newtonjax.experiments.problems import nist

jax.config.update("jax_enable_x64", True)

MIN_LRE = 6.0  # correct significant digits on the worst parameter
MAXITER = 500  # the hardest case (MGH09 start 1) needs about 200
TOLERANCES = {}  # gtol, ftol, xtol: the float64 defaults
SCIPY_TOL = 1e-15  # scipy's ftol = xtol = gtol: as tight as MINPACK allows
SCIPY_MIN_PASSES = 50  # sanity only: MINPACK reaches 6 digits on 53 of 54 cases


def solve_problem(problem):
    """Both starts of one problem in one jitted, vmapped solve."""

    def solve(start):
        result = nj.least_squares(
            problem.residual_fn,
            start,
            method="levenberg_marquardt",
            maxiter=MAXITER,
            **TOLERANCES,
        )
        return result.params, result.num_steps, result.status

    starts = jnp.stack([jnp.asarray(s, jnp.float64) for s in problem.starts])
    params, steps, status = jax.jit(jax.vmap(solve))(starts)
    return np.asarray(params), np.asarray(steps), np.asarray(status)


def solve_scipy(problem, start):
    residual = jax.jit(problem.residual_fn)
    jacobian = jax.jit(jax.jacfwd(problem.residual_fn))
    result = scipy_least_squares(
        lambda b: np.asarray(residual(b)),
        np.asarray(start, np.float64),
        jac=lambda b: np.asarray(jacobian(b)),
        method="lm",
        ftol=SCIPY_TOL,
        xtol=SCIPY_TOL,
        gtol=SCIPY_TOL,
        max_nfev=20_000,
    )
    return result


def run_cases(names, with_scipy=False):
    rows = []
    for name in names:
        problem = nist.load(name)
        params, steps, status = solve_problem(problem)
        for k, start in enumerate(problem.starts):
            row = {
                "case": f"{name}/{k + 1}",
                "lre": nist.min_lre(params[k], problem.certified_params),
                "steps": int(steps[k]),
                "status": nj.Status(int(status[k])).name,
            }
            if with_scipy:
                ref = solve_scipy(problem, start)
                row.update(
                    scipy_lre=nist.min_lre(ref.x, problem.certified_params),
                    scipy_nfev=int(ref.nfev),
                    scipy_njev=int(ref.njev),
                    scipy_status=int(ref.status),
                    scipy_finite=bool(np.all(np.isfinite(ref.x))),
                )
            rows.append(row)
    return rows


def print_table(title, rows, seconds):
    scipy = "scipy_lre" in rows[0]
    head = f"{'case':14s} {'LRE':>6s} {'iters':>6s} {'status':10s}"
    if scipy:
        head += f" | {'scipy LRE':>9s} {'nfev':>6s} {'njev':>6s}"
    print(f"\n{title} ({len(rows)} cases, {seconds:.1f} s)")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['case']:14s} {r['lre']:6.2f} {r['steps']:6d} {r['status']:10s}"
        if scipy:
            line += f" | {r['scipy_lre']:9.2f} {r['scipy_nfev']:6d} {r['scipy_njev']:6d}"
        print(line)
    passes = sum(r["lre"] >= MIN_LRE for r in rows)
    summary = (
        f"newtonjax: {passes}/{len(rows)} cases with LRE >= {MIN_LRE}, worst LRE "
        f"{min(r['lre'] for r in rows):.2f}, {sum(r['steps'] for r in rows)} iterations"
    )
    if scipy:
        scipy_passes = sum(r["scipy_lre"] >= MIN_LRE for r in rows)
        summary += (
            f"\nscipy lm:  {scipy_passes}/{len(rows)} cases, worst LRE "
            f"{min(r['scipy_lre'] for r in rows):.2f}, "
            f"{sum(r['scipy_nfev'] for r in rows)} nfev, "
            f"{sum(r['scipy_njev'] for r in rows)} njev"
        )
    print(summary)


def check(rows):
    failed = [
        f"{r['case']}: LRE {r['lre']:.2f} after {r['steps']} iterations ({r['status']})"
        for r in rows
        if not r["lre"] >= MIN_LRE
    ]
    assert not failed, f"LRE < {MIN_LRE}: " + "; ".join(failed)
    assert all(r["steps"] < MAXITER for r in rows), [r["case"] for r in rows]


def test_lower_difficulty_reaches_certified_values():
    start = time.perf_counter()
    rows = run_cases(nist.names("lower"))
    print_table(
        "NIST StRD lower difficulty, Levenberg–Marquardt", rows, time.perf_counter() - start
    )
    check(rows)


@pytest.mark.slow
def test_all_54_cases_reach_certified_values_and_compare_with_scipy():
    start = time.perf_counter()
    rows = run_cases(nist.names(), with_scipy=True)
    print_table("NIST StRD, all problems: newtonjax vs scipy lm", rows, time.perf_counter() - start)
    # Sanity of the reference only: MINPACK runs and mostly succeeds.
    assert all(r["scipy_finite"] and r["scipy_status"] >= 1 for r in rows)
    assert sum(r["scipy_lre"] >= MIN_LRE for r in rows) >= SCIPY_MIN_PASSES
    check(rows)
