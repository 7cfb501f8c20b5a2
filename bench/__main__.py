"""Run every bench/bench_*.py module that defines `run() -> list[str]` and print its lines.

`python -m bench` runs them all; `python -m bench core lambda` runs only those named.
`python -m bench streams --profile` calls the named modules' `profile()` instead of `run()`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(args: list[str]) -> int:
    names = [arg for arg in args if not arg.startswith("-")]
    entry = "profile" if "--profile" in args else "run"
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
        runner = getattr(module, entry, None)
        if runner is None:
            continue
        print()
        for line in runner():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
