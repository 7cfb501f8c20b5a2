"""Every benchmark module imports: nothing in the suite runs `make bench` (it takes many
minutes and wants a quiet machine), so a module that imports something since moved or
renamed would otherwise only fail when someone next runs the benchmarks."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from tests.support.servers import REPO

BENCH = [module.name for module in pkgutil.iter_modules([str(Path(REPO) / "bench")])]


def test_the_bench_package_has_its_modules() -> None:
    assert {"bench_streams", "bench_core", "bench_lambda", "harness"} <= set(BENCH)


@pytest.mark.parametrize("name", BENCH)
def test_a_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if name.startswith("bench_"):
        # `python -m bench` runs what defines run() (bench/__main__.py).
        assert callable(getattr(module, "run", None)) or callable(getattr(module, "profile", None))
