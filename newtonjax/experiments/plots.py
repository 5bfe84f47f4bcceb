"""Figures of a run folder, drawn from its ``metrics.jsonl`` (matplotlib, Agg)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["read_metrics", "write_plots", "fit_band", "predictive"]

FIGSIZE = (6.4, 4.4)
DPI = 100


def read_metrics(run_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """``{optimizer: {column: values}}`` from a run folder's metrics file."""
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(Path(run_dir) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            label = record.pop("optimizer")
            for key, value in record.items():
                series[label][key].append(float(value))
    return {k: dict(v) for k, v in series.items()}


def _positive(values):
    return [v if v > 0 else float("nan") for v in values]


def _figure(series, x_key, y_key, xlabel, ylabel, title, path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for label, columns in series.items():
        if y_key in columns:
            ax.plot(columns[x_key], _positive(columns[y_key]), label=label, lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(run_dir: str | Path) -> list[Path]:
    """Loss vs step, loss vs wall time and gradient norm vs step, log scale."""
    run_dir = Path(run_dir)
    series = read_metrics(run_dir)
    return [
        _figure(series, "step", "loss", "step", "loss", "Loss", run_dir / "loss_vs_step.png"),
        _figure(
            series,
            "time",
            "loss",
            "wall time (s)",
            "loss",
            "Loss vs time",
            run_dir / "loss_vs_time.png",
        ),
        _figure(
            series, "step", "grad_norm", "step", "‖∇f‖∞", "Gradient norm", run_dir / "grad_norm.png"
        ),
    ]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def fit_band(path: str | Path, figure: dict, title: str = "") -> Path:
    """A fitted curve with its confidence and prediction bands (``kind: covariance``).

    Upper panel: data, fit and the two ``level`` bands; lower panel: the residuals with
    the bands about the fit, where bands narrower than the data's spread stay visible.
    """
    plt = _pyplot()
    t, level = figure["quantile"], figure["level"]
    grid, mean = figure["grid"], figure["mean"]
    sd_mean, sd_pred = figure["sd_mean"], figure["sd_pred"]
    x, y = figure["inputs"], figure["targets"]
    pct = f"{100 * level:g}%"
    fig, (ax, ax_res) = plt.subplots(
        2, 1, figsize=(7, 6), dpi=DPI, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.fill_between(grid, mean - t * sd_pred, mean + t * sd_pred, color="C0", alpha=0.15,
                    label=f"{pct} prediction band")  # fmt: skip
    ax.fill_between(grid, mean - t * sd_mean, mean + t * sd_mean, color="C0", alpha=0.4,
                    label=f"{pct} confidence band (mean)")  # fmt: skip
    ax.plot(grid, mean, "C0", label="fit")
    ax.plot(x, y, "k.", label="data")
    ax.set_ylabel("y")
    estimates = ",  ".join(
        f"b{i + 1} = {b:.4g} ± {se:.2g}"
        for i, (b, se) in enumerate(zip(figure["theta"], figure["se"], strict=True))
    )
    ax.set_title(f"{title}: {estimates}" if title else estimates, fontsize="small")
    ax.legend(loc="best", fontsize="small")
    ax_res.axhline(0.0, color="C0")
    ax_res.fill_between(grid, -t * sd_pred, t * sd_pred, color="C0", alpha=0.15)
    ax_res.fill_between(grid, -t * sd_mean, t * sd_mean, color="C0", alpha=0.4)
    ax_res.plot(x, y - figure["fitted"], "k.")
    ax_res.set_xlabel("x")
    ax_res.set_ylabel("y − fit")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def predictive(path: str | Path, figure: dict, title: str = "") -> Path:
    """The linearized predictive of a Laplace posterior (``kind: laplace``).

    A map over two inputs (class probability with the probit correction and the log
    predictive SD of the logit, data on top) or a curve with its ``level`` band of the
    mean response; first, when the prior was tuned, the evidence along the ascent.
    """
    plt = _pyplot()
    tuning = figure.get("tuning")
    is_map = figure["type"] == "map"
    panels = (1 if tuning else 0) + (2 if is_map else 1)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.4), dpi=DPI, squeeze=False)
    axes = list(axes[0])
    if tuning:
        ax = axes.pop(0)
        ax.plot(tuning["trace_log_prior_precision"], tuning["trace_log_marginal_likelihood"],
                "C1.-", ms=4, lw=0.8)  # fmt: skip
        ax.axvline(tuning["trace_log_prior_precision"][-1], color="C1", ls="--", lw=1)
        ax.set_xlabel("log prior precision")
        ax.set_ylabel("log evidence (Laplace)")
        ax.set_title("prior tuned by jax.grad of the evidence", fontsize="small")
        ax.grid(True, alpha=0.3)
    x, y = figure["inputs"], figure["targets"]
    if is_map:
        uu, vv = np.meshgrid(*figure["axes"])
        first = figure.get("probability", figure["mean"])
        first_title = (
            "predictive p(y = 1 | x), linearized + probit"
            if "probability" in figure
            else "predictive mean"
        )
        fields = [
            (axes[0], first, first_title, "RdBu_r"),
            (axes[1], np.log10(np.maximum(figure["sd"], 1e-300)),
             "log10 predictive SD (linearized)", "viridis"),
        ]  # fmt: skip
        for ax, field, name, cmap in fields:
            image = ax.contourf(uu, vv, field, levels=20, cmap=cmap)
            fig.colorbar(image, ax=ax)
            boundary = 0.0 if "probability" in figure else float(np.median(figure["mean"]))
            ax.contour(uu, vv, figure["mean"], levels=[boundary], colors="k", linewidths=1)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="bwr", edgecolors="k", s=14, lw=0.5)
            ax.set_title(name, fontsize="small")
    else:
        ax = axes[0]
        grid, mean, sd = figure["grid"], figure["mean"], figure["sd"]
        z = float(np.sqrt(2.0) * _erfinv(figure["level"]))
        label = f"{100 * figure['level']:g}% band of the mean (linearized)"
        ax.fill_between(grid, mean - z * sd, mean + z * sd, color="C0", alpha=0.3, label=label)
        ax.plot(grid, mean, "C0", label="predictive mean")
        ax.plot(x, y, "k.", label="data")
        ax.legend(loc="best", fontsize="small")
        ax.set_title("linearized predictive", fontsize="small")
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _erfinv(p: float) -> float:
    import jax.scipy.special

    return float(jax.scipy.special.erfinv(p))
