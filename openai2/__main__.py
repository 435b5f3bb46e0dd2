"""``python -m openai2``: runs the command line (see :mod:`openai2.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
