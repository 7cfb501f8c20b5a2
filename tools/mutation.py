"""Mutation testing of the code that guards money and secrets (`make mutation`).

For each target module, mutmut (pinned in the dev extra) runs in a scratch copy of the tree
under .mutation/<target>/ with a config that mutates that module only and selects only the
tests that cover it; mutmut then maps each mutated function to the tests that call it and
runs just those per mutant. At the end: the score per module, the total, and every surviving
mutant with its diff (docs/mutation.md explains each one that is kept).

Usage:
    python tools/mutation.py                 every target
    python tools/mutation.py cors limits     some targets (names from TARGETS)
    python tools/mutation.py --list          the targets and their tests

Exit status 1 when the total score is under --min-score (default 90).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"


@dataclass(frozen=True)
class Target:
    name: str
    modules: tuple[str, ...]
    # The tests that cover the modules: pytest node ids or paths.
    tests: tuple[str, ...]
    # mutmut mutant-name globs: only the functions that guard, where the module is large.
    functions: tuple[str, ...] = ()


# Lines not mutated: log calls, and the text lines of error messages (a string literal alone
# on its line, inside a raise). Their wording is not what guards money or secrets; that no
# message quotes a secret is tested by tests/security/test_secrets_in_logs.py.
SKIPPED_LINES = (r"^\s*logger\.", r"^\s*[rf]*\"[^\"]*\"\s*\)?,?$")


# The code that guards money and secrets, each with the tests that cover it. Slow suites
# (browser, platforms, lambda, sdk) stay out: they cover these modules only through the same
# paths the listed tests take.
TARGETS: tuple[Target, ...] = (
    Target(
        "credentials",
        ("core/access/credentials.py", "core/access/identify.py"),
        (
            "tests/access/test_credential_slots.py",
            "tests/access/test_tokens_over_proxy.py",
            "tests/access/test_token_expiry_while_cached.py",
            "tests/access/test_tokens.py",
            "tests/access/test_anonymous.py",
            "tests/access/test_jwt_over_proxy.py",
            "tests/access/test_credential_units.py",
        ),
    ),
    Target(
        "scopes",
        ("core/access/policy.py", "core/access/scopes.py", "core/stages.py"),
        (
            "tests/access/test_policy.py",
            "tests/access/test_policy_edges.py",
            "tests/access/test_token_scope_lookalikes.py",
            "tests/access/test_tokens_over_proxy.py",
            "tests/usage/test_refunds_and_partial_failures.py",
            "tests/usage/test_charge_units.py",
            "tests/usage/test_budget.py::test_a_route_the_meter_cannot_read_is_refused_under_a_budget",
        ),
    ),
    Target(
        "headers",
        ("core/headers.py",),
        # Every proxied request passes these functions, so every socket test reaches them:
        # only the tests that check headers are selected (test_providers_routes.py and
        # test_hostile_requests.py reach the same lines through servers, at about two
        # minutes a surviving mutant on this machine).
        (
            "tests/access/test_credential_slots.py",
            "tests/proxy/test_endpoint_in_process.py",
            "tests/proxy/test_header_units.py",
        ),
    ),
    Target(
        "scrub",
        ("core/proxy/scrub.py",),
        (
            "tests/security/test_streamed_error_scrub.py",
            "tests/security/test_secrets_in_logs.py",
            "tests/security/test_findings.py",
        ),
    ),
    Target(
        "cors",
        ("core/proxy/cors.py",),
        (
            "tests/proxy/test_cors.py",
            "tests/admin/test_admin_app.py::test_cors_never_answers_for_admin",
            "tests/security/test_lookalikes.py",
            "tests/admin/test_security.py",
            "tests/usage/test_budget.py::test_a_browser_can_read_its_usage_through_cors",
        ),
    ),
    Target(
        "meter",
        ("core/usage/meter.py", "core/usage/splice.py"),
        (
            "tests/usage/test_bypasses.py",
            "tests/usage/test_refunds_and_partial_failures.py",
            # The splice and usage keys however the JSON is spelt (escapes, spaces).
            "tests/usage/test_spaced_json.py",
            "tests/usage/test_usage_readers.py",
            "tests/access/test_limits_over_proxy.py",
        ),
    ),
    Target(
        "budgets",
        ("core/usage/prices.py", "core/usage/budget.py", "core/usage/caps.py"),
        (
            "tests/usage/test_budget.py",
            "tests/usage/test_budget_windows.py",
            "tests/usage/test_price_table.py",
            "tests/usage/test_cap_races.py",
            "tests/usage/test_refunds_and_partial_failures.py",
        ),
    ),
    Target(
        "limits",
        ("core/access/limits.py",),
        (
            "tests/access/test_anonymous.py",
            "tests/access/test_client_ip.py",
            "tests/access/test_limits_over_proxy.py",
            "tests/access/test_limit_units.py",
            "tests/stores/test_counters.py",
            "tests/usage/test_cap_races.py",
            "tests/usage/test_refunds_and_partial_failures.py",
        ),
    ),
    Target(
        "stores",
        ("core/stores/memory.py", "core/stores/sqlite.py"),
        (
            "tests/stores/test_counters.py",
            "tests/stores/test_store_contract.py",
            "tests/stores/test_store_edges.py",
            "tests/usage/test_cap_races.py",
        ),
    ),
    Target(
        "cache",
        ("core/cache/key.py", "core/cache/check.py"),
        ("tests/cache",),  # test_cache_refusals.py among them
    ),
    Target(
        "admin",
        ("core/admin/security.py",),
        (
            "tests/admin/test_security_edges.py",
            "tests/admin/test_security.py",
            "tests/admin/test_admin_app.py",
            # Sign-out, the Secure cookie behind a TLS front end, the sign-in limit's race.
            "tests/admin/test_hostile_admin.py",
        ),
    ),
    Target(
        "realtime",
        ("core/realtime/session.py",),
        (
            "tests/realtime/test_units.py",
            "tests/realtime/test_openai_realtime.py",
            # Gemini Live names its model in the first message: `first_message` is reached
            # only from these.
            "tests/realtime/test_gemini_live.py",
            "tests/realtime/test_hostile_sessions.py",
        ),
        # The admission: who may open a session, and what its first message may ask.
        (
            "core.realtime.session.xǁRealtimeEndpointǁcheck_origin__mutmut_*",
            "core.realtime.session.xǁRealtimeEndpointǁsession__mutmut_*",
            "core.realtime.session.xǁRealtimeEndpointǁfirst_message__mutmut_*",
        ),
    ),
)


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def prepare(target: Target, tests_from: str | None) -> tuple[Path, list[str]]:
    """A scratch copy of the tree whose pyproject names this target's modules and tests.
    With `tests_from` (a git ref), the tests are that commit's: the score before new tests."""
    place = SCRATCH / (target.name + (f"@{tests_from}" if tests_from else ""))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "*.db")
    for folder in ("core", "handlers", "tests"):
        shutil.rmtree(place / folder, ignore_errors=True)
        if folder == "tests" and tests_from:
            place.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x"], cwd=place, input=archive, check=True)
        else:
            shutil.copytree(ROOT / folder, place / folder, ignore=ignore)
    shutil.rmtree(place / "mutants", ignore_errors=True)
    # A test file that does not exist in that commit is left out.
    tests = [t for t in target.tests if (place / t.partition("::")[0]).exists()]
    type_check = [sys.executable, "-m", "mypy", "--output", "json", *target.modules]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", pyproject)
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["core"]\n'
        f"only_mutate = {_toml_list(target.modules)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x"]\n'
        'also_copy = ["handlers"]\n'
        # A mutant mypy rejects is caught by `make typecheck` (part of `make test`), as a
        # failing test would catch it: mutmut counts it killed without running the tests.
        f"type_check_command = {_toml_list(type_check)}\n"
        # TOML literal strings: the backslashes reach mutmut as written.
        "do_not_mutate_patterns = [" + ", ".join("'" + p + "'" for p in SKIPPED_LINES) + "]\n"
    )
    (place / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return place, tests


@dataclass
class Score:
    name: str
    killed: int = 0
    survived: list[str] | None = None
    not_run: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.killed + len(self.survived or [])

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def run(target: Target, mutmut: Path, tests_from: str | None) -> Score:
    place, _ = prepare(target, tests_from)
    started = time.monotonic()
    done = subprocess.run([str(mutmut), "run", *target.functions], cwd=place, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed on {target.name} (exit {done.returncode}): see above")
    listing = subprocess.run(
        [str(mutmut), "results", "--all", "true"],
        cwd=place,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    score = Score(target.name, survived=[], seconds=seconds)
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status in ("killed", "timeout", "caught by type check"):
            score.killed += 1
        elif status in ("survived", "no tests"):
            # A mutant no selected test reaches is one no test would notice: it counts as
            # surviving, not as "not run", or a test selection missing a function would
            # raise the score.
            assert score.survived is not None
            score.survived.append(name)
        elif name:
            score.not_run += 1  # outside the chosen functions
    for mutant in score.survived or []:
        diff = subprocess.run(
            [str(mutmut), "show", mutant], cwd=place, capture_output=True, text=True, check=False
        ).stdout
        print(f"\n--- survived: {mutant}\n{diff}")
    return score


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--tests-from", help="a git ref: run that commit's tests instead")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    if args.list:
        for target in TARGETS:
            print(
                f"{target.name}: {', '.join(target.modules)}\n    tests: {' '.join(target.tests)}"
            )
        return 0
    mutmut = Path(sys.executable).parent / "mutmut"
    scores = [run(target, mutmut, args.tests_from) for target in chosen]
    killed = sum(s.killed for s in scores)
    total = sum(s.total for s in scores)
    print("\nmutation score (killed / mutants; mutants not run; wall time):")
    for s in scores:
        print(
            f"  {s.name:12} {s.killed:5} / {s.total:<5} {s.percent:5.1f} %"
            f"  ({s.not_run} not run)  {s.seconds:7.0f} s"
        )
    percent = 100.0 * killed / total if total else 100.0
    print(f"  {'total':12} {killed:5} / {total:<5} {percent:5.1f} %")
    return 0 if percent >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
