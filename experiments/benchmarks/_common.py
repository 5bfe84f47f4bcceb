"""What the benchmark scripts share: load measurement and the RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n"

__all__ = [
    "RESULTS_PATH",
    "RESULTS_HEADER",
    "cpu_counters",
    "machine_info",
    "other_load",
    "package_versions",
    "replace_section",
]


def machine_info() -> dict[str, str]:
    """CPU model (with its widest SIMD), core counts, JAX devices and XLA flags."""
    import jax

    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(re.findall(r"^(model name|cpu family|model|flags)\s*:\s*(.*)$", text, re.M))
        if "model name" in fields:
            cpu = fields["model name"].strip()
        if "cpu family" in fields and "model" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields['model']}"
            simd = [f for f in ("avx512f", "avx2") if f in fields.get("flags", "").split()]
            cpu += f", {simd[0]})" if simd else ")"
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "device": ", ".join(str(d) for d in jax.devices()),
        "xla_flags": os.environ.get("XLA_FLAGS", "") or "(none)",
    }


def package_versions(packages: tuple[str, ...]) -> str:
    """``"jax 0.10.2, scipy 1.17.1, …, Python 3.11.7"`` for the installed packages."""

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    return (
        ", ".join(f"{p} {version(p)}" for p in packages) + f", Python {platform.python_version()}"
    )


def cpu_counters() -> tuple[float, float, float]:
    """(wall s, CPU s this process used, CPU s all processes used) — Linux only."""
    wall = time.perf_counter()
    own = sum(os.times()[:2])  # user + system of all this process's threads
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        ticks = [int(f) for f in fields]  # user nice system idle iowait irq softirq steal
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    return wall, own, busy


def other_load(before: tuple, after: tuple) -> float:
    """Cores' worth of CPU that *other* processes used between two counter readings."""
    wall = after[0] - before[0]
    others = (after[2] - before[2]) - (after[1] - before[1])
    return max(others, 0.0) / wall if wall > 0 else float("nan")


def replace_section(text: str, title: str, path: Path = RESULTS_PATH) -> None:
    """Replace (or append) the ``## title`` section of ``path`` with ``text``."""
    old = path.read_text() if path.exists() else RESULTS_HEADER
    if not old.startswith("# "):
        old = RESULTS_HEADER + "\n" + old
    start = old.find(title + "\n")
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(title))
        tail = "" if nxt < 0 else old[nxt + 1 :]
        new = old[:start] + text + ("\n" + tail if tail else "")
    path.write_text(new)
