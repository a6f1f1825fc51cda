"""``python -m commonforge``: the ``commonforge`` command, for a Python without the entry point on PATH."""

import sys

from commonforge.cli import main

sys.exit(main())
