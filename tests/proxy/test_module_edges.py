"""The request path's modules import downwards only, lazy imports included: the endpoint
uses the relay, the taps, forward and recovery; none of them reaches back into it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "core" / "proxy"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top, inside functions or for type checking."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "module", ["recovery", "pipeline", "relay", "taps", "forward", "usage_report"]
)
def test_no_part_of_the_request_path_imports_the_endpoint(module: str) -> None:
    assert "core.proxy.endpoint" not in imported_modules(PROXY / f"{module}.py")


def test_the_relay_and_its_taps_know_no_feature() -> None:
    """The taps' order is decided in taps.py; the relay only runs the chain."""
    relay = imported_modules(PROXY / "relay.py")
    assert not {m for m in relay if m.startswith(("core.usage", "core.cache"))} - {
        "core.usage.meter"  # the Exchange's type only
    }
