"""BUDGET_WINDOW at its edges: the last second of a day and of every month length (28, 29,
30 and 31 days, leap years, the year's end) belongs to that window, the next second to the
next one."""

from __future__ import annotations

import datetime

import pytest

from core.usage.budget import Window

UTC = datetime.UTC


def _at(*parts: int) -> float:
    return datetime.datetime(*parts, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [
        (2026, 1, 31),
        (2026, 2, 28),
        (2024, 2, 29),  # leap year
        (2000, 2, 29),  # divisible by 400: leap
        (2100, 2, 28),  # divisible by 100 only: not leap
        (2026, 4, 30),
        (2026, 7, 31),
        (2026, 8, 31),  # two 31-day months in a row
        (2026, 11, 30),
        (2026, 12, 31),  # the year rolls over
    ],
)
def test_a_month_window_ends_at_the_first_second_of_the_next_month(
    year: int, month: int, days: int
) -> None:
    following = _at(year + month // 12, month % 12 + 1, 1)
    for moment in (
        _at(year, month, 1),
        _at(year, month, 15, 12),
        _at(year, month, days, 23, 59, 59),
        following - 0.001,
    ):
        window = Window.containing(moment, "month")
        assert window.name == f"{year:04d}-{month:02d}"
        assert window.ends_at == following
    after = Window.containing(following, "month")
    assert after.name == f"{year + month // 12:04d}-{month % 12 + 1:02d}"


@pytest.mark.parametrize(
    ("day", "next_day"),
    [
        ((2026, 3, 31), (2026, 4, 1)),
        ((2024, 2, 28), (2024, 2, 29)),
        ((2024, 2, 29), (2024, 3, 1)),
        ((2026, 2, 28), (2026, 3, 1)),
        ((2026, 12, 31), (2027, 1, 1)),
    ],
)
def test_a_day_window_ends_at_midnight_utc(
    day: tuple[int, int, int], next_day: tuple[int, int, int]
) -> None:
    midnight = _at(*next_day)
    for moment in (_at(*day), _at(*day, 23, 59, 59), midnight - 0.001):
        window = Window.containing(moment, "day")
        assert window.name == "{:04d}-{:02d}-{:02d}".format(*day)
        assert window.ends_at == midnight
    assert Window.containing(midnight, "day").name == "{:04d}-{:02d}-{:02d}".format(*next_day)
