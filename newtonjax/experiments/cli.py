"""``newtonjax run CONFIG [key=value ...]`` and friends.

Exit codes: 0 success; 2 for every failure a user can cause — a bad config or
command line, an unreadable config, an output folder that cannot be created or
written, a full disk, a missing optional dependency, Ctrl-C — with one line on stderr
naming the problem and no traceback. Nothing written before the failure is removed:
a run folder keeps its config, environment and every metrics line already flushed, and
an interrupted run's summary says where it stopped.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``newtonjax: <what is wrong> (see --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="newtonjax", description="Second-order optimization experiments with newtonjax."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run an experiment config")
    run.add_argument("config", help="path to a YAML config")
    run.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    run.add_argument("--output-dir", help="parent folder of the run folder (default: output.dir)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="do not keep XLA compilations on disk (same as run.compilation_cache=false)",
    )
    check = sub.add_parser("validate", help="validate configs without running them")
    check.add_argument("configs", nargs="+")
    check.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("list", help="list registered problems and optimizers")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; return the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt:
        print("newtonjax: interrupted", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    from newtonjax.experiments.config import ConfigError, load_config
    from newtonjax.experiments.runner import RunError

    try:
        if args.command == "list":
            from newtonjax.experiments import optimizers
            from newtonjax.experiments.problems import base

            base.resolve("rosenbrock")  # registers the built-ins
            print("problems:   " + ", ".join(sorted(base.PROBLEMS)))
            print("optimizers: " + ", ".join(optimizers.OPTIMIZERS))
            return 0
        if args.command == "validate":
            for path in args.configs:
                load_config(path, args.override)
                print(f"{path}: ok")
            return 0
        overrides = list(args.overrides)
        if args.no_progress:
            overrides.append("run.progress=false")
        if args.no_compilation_cache:
            overrides.append("run.compilation_cache=false")
        config = load_config(args.config, overrides)
        from newtonjax.experiments.runner import RunInterrupted, run_experiment, setup_platform

        device = setup_platform(config)
        try:
            run_dir = run_experiment(config, device=device, output_dir=args.output_dir)
        except RunInterrupted as stop:
            print(f"newtonjax: {stop}", file=sys.stderr)
            return 2
        print(f"results: {run_dir}")
        print((run_dir / "summary.md").read_text())
        return 0
    except ConfigError as err:
        print(f"newtonjax: config error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"newtonjax: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
