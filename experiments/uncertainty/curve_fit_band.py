"""Curve fitting with error bars: NIST Misra1a, its standard errors and a 95% band.

Purpose: the whole frequentist workflow in a few calls — fit
``y = b1·(1 − exp(−b2·x))`` to NIST StRD Misra1a with ``nj.least_squares``, take
``nj.parameter_covariance`` (``s² (JᵀJ)⁻¹``, scipy ``curve_fit``'s ``pcov``) at the
fit, and propagate it to the fitted curve by the delta method (Bates & Watts 1988,
§2.3.1): for the mean response ``f(x; θ̂)`` with gradient ``g(x) = ∂f/∂θ``,

    Var f(x; θ̂) ≈ g(x)ᵀ Σ g(x),   band = f ± t_{0.975, m−n} · sqrt(g Σ g),

and, for a new observation, the prediction band with ``s²`` added under the root.

Expected result: the fitted parameters and their standard errors agree with the NIST
certificate to about 10 significant digits (printed), the confidence band is narrow
in the middle of the data and widens beyond it (the plot extrapolates to x = 1000;
the lower panel shows both bands about the fit, where they are visible), and the 14
points lie inside the 95% prediction band.

Runtime: ~10 s on a laptop CPU (mostly compilation).

Command::

    python -m experiments.uncertainty.curve_fit_band [--out runs/uncertainty]

Writes ``curve_fit_band.png``.
"""

from __future__ import annotations

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import newtonjax as nj  # noqa: E402
from newtonjax.experiments.problems import nist  # noqa: E402


def model(b, x):
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def residual(b, x, y):
    return model(b, x) - y


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/uncertainty"))
    args = parser.parse_args(argv)

    problem = nist.load("Misra1a")
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    fit = nj.least_squares(residual, jnp.asarray(problem.starts[0]), args=(x, y))
    b = fit.params
    cov = nj.parameter_covariance(residual, b, x, y)
    se = jnp.sqrt(jnp.diag(cov))

    print(f"Misra1a: {problem.model_formula}   ({fit.message})")
    print(f"{'':4s} {'estimate':>18s} {'std. error':>18s} {'NIST estimate':>18s} {'NIST SD':>18s}")
    for i in range(len(b)):
        print(
            f"b{i + 1:<3d} {float(b[i]):18.10e} {float(se[i]):18.10e} "
            f"{problem.certified_params[i]:18.10e} {problem.certified_std[i]:18.10e}"
        )
    lre = nist.log_relative_error(np.asarray(se), problem.certified_std)
    print(f"correct significant digits of the standard errors: {lre.round(1).tolist()}")

    # Delta method on a grid, one Jacobian for all points.
    m, n = problem.num_observations, problem.num_params
    t = scipy.stats.t.ppf(0.975, m - n)
    s2 = float(jnp.sum(residual(b, x, y) ** 2)) / (m - n)
    grid = jnp.linspace(0.0, 1000.0, 400)
    g = jax.jacfwd(model)(b, grid)  # (400, n)
    mean = model(b, grid)
    sd_mean = jnp.sqrt(jnp.einsum("ij,jk,ik->i", g, cov, g))
    sd_pred = jnp.sqrt(sd_mean**2 + s2)
    g_data = jax.jacfwd(model)(b, x)
    sd_pred_data = jnp.sqrt(jnp.einsum("ij,jk,ik->i", g_data, cov, g_data) + s2)
    inside = jnp.abs(y - model(b, x)) <= t * sd_pred_data
    print(f"points inside the 95% prediction band: {int(inside.sum())} of {m}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_res) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.fill_between(grid, mean - t * sd_pred, mean + t * sd_pred, color="C0", alpha=0.15,
                    label="95% prediction band")  # fmt: skip
    ax.fill_between(grid, mean - t * sd_mean, mean + t * sd_mean, color="C0", alpha=0.4,
                    label="95% confidence band (mean)")  # fmt: skip
    ax.plot(grid, mean, "C0", label="fit")
    ax.plot(x, y, "k.", label="NIST Misra1a")
    ax.set_ylabel("y")
    ax.set_title(
        f"b1 = {float(b[0]):.2f} ± {float(se[0]):.2f},  b2 = {float(b[1]):.3e} ± {float(se[1]):.1e}"
    )
    ax.legend(loc="upper left")
    # The bands are a fraction of a unit wide: the lower panel shows them about the fit.
    ax_res.axhline(0.0, color="C0")
    ax_res.fill_between(grid, -t * sd_pred, t * sd_pred, color="C0", alpha=0.15)
    ax_res.fill_between(grid, -t * sd_mean, t * sd_mean, color="C0", alpha=0.4)
    ax_res.plot(x, y - model(b, x), "k.")
    ax_res.set_xlabel("x")
    ax_res.set_ylabel("y − fit")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "curve_fit_band.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
