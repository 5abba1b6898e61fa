"""``python -m pnn``: the same command line as the ``pnn`` console script."""

import sys

from pnn.cli import run

sys.exit(run())
