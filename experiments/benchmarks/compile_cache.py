"""What JAX's persistent compilation cache saves the experiment runner.

Runs ``newtonjax run configs/quickstart.yaml`` in fresh processes against one new,
empty cache folder: the first process compiles every step and fills the cache, the
next ones read it. Reports, per process, the compile time of each optimizer's step
(as ``summary.json`` records it: ``jit(...).lower(...).compile()``), the cache hits and
misses the runner counted, and the wall time of the whole command (Python and JAX
start-up included). A last process runs with ``--no-compilation-cache`` as the
reference.

Run (about a minute on 2 cores)::

    pip install -e ".[experiments]"
    python -m experiments.benchmarks.compile_cache --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.benchmarks._common import (
    cpu_counters,
    machine_info,
    other_load,
    package_versions,
    replace_section,
)

SECTION_TITLE = "## Persistent compilation cache (experiment runner)"
ROOT = Path(__file__).resolve().parents[2]


def run_once(config: str, cache: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "NEWTONJAX_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "newtonjax", "run", config, *extra, "--no-progress",
               "--output-dir", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.strip()}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "wall": wall,
        "compile": {o["label"]: o["compile_time"] for o in summary["optimizers"]},
        "cache": summary["compilation_cache"],
    }


def measure(config: str, repeats: int) -> list[tuple[str, dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        rows = []
        for k in range(repeats):
            label = "first process (empty cache)" if k == 0 else f"process {k + 1} (cache filled)"
            rows.append((label, run_once(config, cache, tmp / f"runs{k}", [])))
        rows.append(("without the cache", run_once(
            config, cache, tmp / "runs-off", ["--no-compilation-cache"])))
    return rows


def table(rows: list[tuple[str, dict]]) -> str:
    labels = list(rows[0][1]["compile"])
    head = "| process | " + " | ".join(f"compile {name} (s)" for name in labels)
    head += " | compile total (s) | cache hits / misses | command wall (s) |"
    lines = [head, "|" + " --- |" * (len(labels) + 4)]
    for label, r in rows:
        compiles = [r["compile"][name] for name in labels]
        lines.append(
            f"| {label} | " + " | ".join(f"{c:.2f}" for c in compiles)
            + f" | {sum(compiles):.2f} | {r['cache']['hits']} / {r['cache']['misses']}"
            f" | {r['wall']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=3, help="processes sharing the cache")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md")
    args = parser.parse_args(argv)
    before = cpu_counters()
    rows = measure(args.config, args.repeats)
    load = other_load(before, cpu_counters())
    text = table(rows)
    print(text)
    if args.write:
        info = machine_info()
        first = sum(rows[0][1]["compile"].values())
        second = sum(rows[1][1]["compile"].values())
        section = "\n".join([
            SECTION_TITLE,
            "",
            f"`{args.config}`, each row a fresh `newtonjax run` process; the cache rows share "
            "one cache folder that starts empty. Compile times are the runner's own "
            "(`summary.json`), wall time is the whole command.",
            "",
            text,
            "",
            f"The filled cache cuts the quickstart's step compiles from {first:.2f} s to "
            f"{second:.2f} s ({first / max(second, 1e-9):.1f}x); the rest of a process's wall "
            "time is Python and JAX start-up, tracing, and the run itself, which the cache "
            "does not touch.",
            "",
            f"Command: `python -m experiments.benchmarks.compile_cache --write` "
            f"({datetime.date.today().isoformat()}; {info['cpu']}; {info['cores']}; "
            f"other load {load:.2f} cores; "
            f"{package_versions(('jax', 'jaxlib', 'optax'))}).",
            "",
        ])
        replace_section(section, SECTION_TITLE)
        print("wrote", SECTION_TITLE)


if __name__ == "__main__":
    main()
