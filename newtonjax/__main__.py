"""``python -m newtonjax run CONFIG``: the experiment command-line front end."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
