"""core/records.py: the settings records behave as the frozen dataclasses they replace
(defaults, fresh factory values, positional and keyword construction, refusals, equality,
a repr without secrets, `replace`, `fields` in order), and a cold start compiles none of
their methods."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.records import FrozenRecordError, Record, field, fields, replace
from core.server.limits import ServerLimits
from tests.support.imports import modules_imported


class Point(Record):
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)


class Point3(Point):
    z: int = 0


def test_defaults_factories_and_both_ways_of_passing_fields() -> None:
    a, b = Point(1), Point(2, 3, tags=["t"])
    assert (a.x, a.y, a.tags, a.secret) == (1, 0, [], "")
    assert (b.x, b.y, b.tags) == (2, 3, ["t"])
    assert Point(1).tags is not Point(1).tags  # a fresh list per record
    assert Point.y == 0  # a plain default stays on the class, as a dataclass's does
    assert [item.name for item in fields(Point3)] == ["x", "y", "tags", "secret", "z"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Point(), "missing 'x'"),
        (lambda: Point(1, x=2), "'x' twice"),
        (lambda: Point(1, nope=2), "no field 'nope'"),
        (lambda: Point(1, 2, [], "", 5), "takes 4 fields"),
    ],
)
def test_a_wrong_construction_is_a_type_error(build: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        build()  # type: ignore[operator]


def test_a_declaration_dataclasses_would_refuse_is_refused() -> None:
    """One list shared by every record, a default and a factory at once, or a
    `__post_init__` that would never run: each a mistake when the class is declared, not a
    setting quietly shared or unchecked later."""
    with pytest.raises(ValueError, match="mutable default list"):

        class Shared(Record):
            names: list[str] = []  # noqa: RUF012

    with pytest.raises(ValueError, match="mutable default dict"):

        class SharedField(Record):
            table: dict[str, int] = field(default={})

    with pytest.raises(ValueError, match="not both"):

        class Both(Record):
            names: tuple[str, ...] = field(default=(), default_factory=tuple)

    with pytest.raises(TypeError, match="__post_init__"):

        class Checked(Record):
            port: int = 0

            def __post_init__(self) -> None:
                raise AssertionError("never runs")


def test_frozen_equal_by_value_hashable_and_repr_hides_secrets() -> None:
    point = Point(1, 2, secret="sk-fake-not-a-key")
    with pytest.raises(FrozenRecordError):
        point.x = 5  # type: ignore[misc]
    with pytest.raises(FrozenRecordError):
        del point.x  # type: ignore[misc]
    assert point == Point(1, 2, secret="sk-fake-not-a-key") and point != Point(1, 3)
    assert Point(1) != Point3(1)  # another class is never equal
    assert hash(ServerLimits()) == hash(ServerLimits())
    assert repr(point) == "Point(x=1, y=2, tags=[])"


def test_replace_makes_a_changed_copy() -> None:
    limits = ServerLimits()
    changed = replace(limits, max_connections=7)
    assert changed.max_connections == 7 and limits.max_connections != 7
    assert changed.header_timeout == limits.header_timeout
    with pytest.raises(TypeError, match="no field"):
        replace(limits, nope=1)


def test_the_settings_repr_names_no_key() -> None:
    settings = Settings(upstream_base_url="https://api.openai.com/v1", upstream_api_key="sk-fake-1")
    assert "sk-fake-1" not in repr(settings)


def test_a_cold_start_defines_no_dataclass() -> None:
    """No record, and no per-request state class, is a dataclass on the handler's import
    path: CPython 3.12 compiles each generated method at import (docs/performance.md)."""
    env = {
        "UPSTREAM_BASE_URL": "https://api.openai.com/v1",
        "UPSTREAM_API_KEY": "fake-upstream-key-000000",
        "PROXY_ACCESS_TOKEN": "fake-caller-token-000000",
    }
    assert "dataclasses" not in modules_imported("handlers.http", env)
