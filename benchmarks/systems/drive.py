"""Run a system module's producer driver: `python -m benchmarks.systems.drive MODULE CMD ...`.

The module is imported by its real name (not run as __main__), so the task names a producer
sends are the names its workers register.
"""

from __future__ import annotations

import importlib
import sys

from benchmarks.systems.common import main

if __name__ == "__main__":
    module = importlib.import_module(sys.argv[1])
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    main(vars(module), getattr(module, "setup", None))
