"""Figures of a run folder, drawn from its ``metrics.jsonl`` (matplotlib, Agg)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

__all__ = ["read_metrics", "write_plots"]

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
