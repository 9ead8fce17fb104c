"""``python -m benchmarks``: run the closed-path overhead benchmark.

There is one benchmark today; this entry point exists so that ``nox -s bench`` and CI need
not know which module holds it.
"""

from __future__ import annotations

from .closed_path import main

if __name__ == "__main__":
    raise SystemExit(main())
