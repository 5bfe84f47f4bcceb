"""What the benchmark scripts share: load measurement and the RESULTS.md sections."""

from __future__ import annotations

import os
import time
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n"

__all__ = ["RESULTS_PATH", "RESULTS_HEADER", "cpu_counters", "other_load", "replace_section"]


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
