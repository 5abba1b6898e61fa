"""``python -m pnn.cli ...`` is the ``pnn`` command."""

import sys

from pnn.cli import run

sys.exit(run())
