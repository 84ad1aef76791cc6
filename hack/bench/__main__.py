"""``python hack/bench [--tier XS|S|M|L]`` (what `make bench` runs): see the package's docstring."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python hack/bench`: import the package from hack/, not its files
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
