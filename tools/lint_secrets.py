"""Refuse `==` / `!=` on digests and secrets: `hmac.compare_digest` belongs there.

An ordinary comparison stops at the first differing byte, so its timing tells an attacker how
much of a guessed token, MAC or CSRF value was right. Both spellings behave the same in every
test, so only a check on the source catches the swap. This one reads the AST and flags a
comparison where either side is named like a secret (`digest`, `token_hash`, `mac`, `csrf`,
`signature`, `secret`, `password`, ...), or is a call to a hashing function (`sha256(...)`,
`hexdigest()`, `.digest()`, `_mac(...)`).

Comparisons with a literal (`x == ""`, `x is None`) or a length (`len(token) == 0`) say nothing
about the secret's value and pass. A line that must compare anyway (a value that is not a
secret but is named like one) carries `# secrets: not a secret` with the reason.

Usage: python tools/lint_secrets.py [paths...]   (default: core handlers); exit 1 on findings.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# Word parts of a name that holds a secret or a digest of one.
SECRET_NAME = re.compile(
    r"(^|_)(digest|digests|hash|hashes|hmac|mac|csrf|signature|sig|secret|password|passwd|"
    r"api_key|apikey|credential|token)(_|$)",
    re.IGNORECASE,
)
# Names that contain a secret word but hold no secret value (counts, times, kinds).
NOT_SECRET_NAME = re.compile(
    r"(count|len|length|size|limit|time|seconds|ttl|expires|expiry|kind|type|scheme|name|id|"
    r"ids|label|prefix|slot|slots|header|param|field|tokens|usage|used|at|store|url)$",
    re.IGNORECASE,
)
HASHING_CALLS = frozenset(
    {"sha256", "sha1", "sha512", "md5", "digest", "hexdigest", "blake2b", "_mac", "mac", "new"}
)
ALLOW_MARKER = "# secrets: not a secret"


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name_of(node.value)
    if isinstance(node, ast.Call):
        # `.encode()` / `.hex()` / `bytes(x)` keep the secret: look through them.
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in {"encode", "hex", "lower", "strip"}:
            return _name_of(func.value)
    return None


def _is_hashing_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in HASHING_CALLS:
        return True
    # `sha256(x).hex()`, `h.digest().lower()`: a method on a hashing call's result.
    return isinstance(func, ast.Attribute) and _is_hashing_call(func.value)


def looks_secret(node: ast.expr) -> bool:
    """True when `node` is named like a secret or a digest, or computes one."""
    if isinstance(node, ast.Constant):
        return False
    if _is_hashing_call(node):
        return True
    name = _name_of(node)
    if name is None:
        return False
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


def _is_harmless_side(node: ast.expr) -> bool:
    # A literal, None, or a len(...)/count says nothing about the secret's bytes.
    if isinstance(node, ast.Constant):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"


def findings(source: str, filename: str = "<string>") -> Iterator[tuple[int, str]]:
    """(line, message) for each `==`/`!=` between a secret and a non-literal."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, sides, sides[1:], strict=False):
            if not isinstance(op, ast.Eq | ast.NotEq):
                continue
            if _is_harmless_side(left) or _is_harmless_side(right):
                continue
            if not (looks_secret(left) or looks_secret(right)):
                continue
            line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
            if ALLOW_MARKER in line:
                continue
            text = ast.unparse(node)
            yield node.lineno, f"`{text}`: compare secrets with hmac.compare_digest"


def check_paths(paths: list[Path]) -> list[str]:
    problems = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            for line, message in findings(path.read_text(encoding="utf-8"), str(path)):
                problems.append(f"{path}:{line}: {message}")
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [Path("core"), Path("handlers")]
    problems = check_paths(paths)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
