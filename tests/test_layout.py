"""The tests' folders mirror the code (docs/development.md, "The layout of tests/"): each
folder of tests/ is a package of core/, the top-level modules of core/ (tests/core),
handlers/, tools/, shared support or one of the four cross-cutting suites; and no test
reaches into another folder's test modules or conftest for a helper (those live in
tests/support)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Suites that cut across the code, plus the shared fakes and the tests of tools/.
APART = {"conformance", "security", "sdk", "browser", "support", "tools"}
# A tests/core file named after no module of core/, and the module it tests.
CORE_ALIASES = {"version": "__init__"}


def _folders(path: Path) -> set[str]:
    return {
        child.name
        for child in path.iterdir()
        if child.is_dir() and not child.name.startswith((".", "__"))
    }


def _packages(path: Path) -> set[str]:
    return {name for name in _folders(path) if (path / name / "__init__.py").exists()}


def test_every_test_folder_mirrors_code_or_is_a_suite_kept_apart() -> None:
    allowed = _packages(ROOT / "core") | {"core", "handlers"} | APART
    assert _folders(TESTS) - allowed == set(), (
        "a tests/ folder that mirrors no package of core/ (or handlers/, tools/): move its "
        "files to the folder of the code they test; see docs/development.md"
    )
    assert _folders(TESTS / "handlers") <= _packages(ROOT / "handlers")


def test_nothing_but_the_suite_s_own_files_sits_at_the_top_of_tests() -> None:
    top = {path.name for path in TESTS.glob("*.py")}
    assert top <= {"__init__.py", "conftest.py", "test_layout.py"}, (
        "shared helpers live in tests/support, tests in the folder of the code they test"
    )


def test_tests_core_holds_only_tests_of_core_top_level_modules() -> None:
    modules = {path.stem for path in (ROOT / "core").glob("*.py")}
    strays = []
    for path in sorted((TESTS / "core").glob("test_*.py")):
        name = CORE_ALIASES.get(path.stem.removeprefix("test_"), path.stem.removeprefix("test_"))
        if not any(name == module or name.startswith(module + "_") for module in modules):
            strays.append(path.name)
    assert strays == [], "tests/core is for core/*.py; name each file test_<module>[_what].py"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_folder_borrows_another_folders_tests_or_conftest() -> None:
    borrowed = []
    for path in sorted(TESTS.rglob("*.py")):
        own = path.relative_to(TESTS).parts[0]
        for module in _imported(path):
            parts = module.split(".")
            if len(parts) < 3 or parts[0] != "tests" or parts[1] in (own, "support"):
                continue
            if parts[-1] == "conftest" or parts[-1].startswith("test_"):
                borrowed.append(f"{path.relative_to(TESTS)} imports {module}")
    assert borrowed == [], "move the shared helper or fixture to tests/support"
