"""``newtonjax run CONFIG`` / ``python -m newtonjax run CONFIG``: the experiment CLI.

The experiment runner is the optional sub-package :mod:`newtonjax.experiments`; its
plotting and progress-bar dependencies come with ``pip install "newtonjax[experiments]"``.
Without them the command says so in one line and exits with status 2.
"""

from __future__ import annotations

import importlib.util
import sys

# The runner's optional dependencies: import name -> distribution name.
OPTIONAL_DEPENDENCIES = {"tqdm": "tqdm", "matplotlib": "matplotlib"}
INSTALL_HINT = 'pip install "newtonjax[experiments]"'


def missing_dependencies() -> list[str]:
    """Distributions of the experiment extra that cannot be imported."""
    missing = []
    for module, dist in OPTIONAL_DEPENDENCIES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(dist)
    return missing


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``newtonjax`` command; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    wants_help = not args or args[0] in ("-h", "--help")
    missing = [] if wants_help else missing_dependencies()
    if missing:
        print(
            f"newtonjax: the experiment runner needs {', '.join(missing)}: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    from newtonjax.experiments.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
