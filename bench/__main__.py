"""Run every bench/bench_*.py module that defines `run() -> list[str]` and print its lines.

`python -m bench` runs them all; `python -m bench core lambda` runs only those named.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    modules = sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )
    if names:
        modules = [m for m in modules if m.removeprefix("bench_") in names]
    print(
        f"llm-proxy benchmarks  ({time.strftime('%Y-%m-%d %H:%M')}, figures are medians of this run)"
    )
    for name in modules:
        module = importlib.import_module(f"bench.{name}")
        runner = getattr(module, "run", None)
        if runner is None:
            continue
        print()
        for line in runner():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
