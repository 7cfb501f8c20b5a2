"""core/escapes.py: what every reader of a URL may get, however many times it decodes."""

from __future__ import annotations

import pytest

from core.escapes import MAX_DECODES, decoded, decodings, escaped_past_limit


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat%2Fcompletions", "/v1/chat/completions"),
        ("/v1/chat%252Fcompletions", "/v1/chat/completions"),
        ("/v1/chat%25252Fcompletions", "/v1/chat/completions"),
        # A `%` that escapes nothing is what every reader gets: kept, and the loop ends.
        ("/v1/files/50%", "/v1/files/50%"),
        ("/v1/files/100%25", "/v1/files/100%"),
        ("/v1/files/%zz", "/v1/files/%zz"),
    ],
)
def test_every_escape_is_decoded(text: str, plain: str) -> None:
    assert decoded(text) == plain
    assert not escaped_past_limit(text)


def test_a_path_escaped_past_the_limit_is_told() -> None:
    at_limit = "x%" + "25" * (MAX_DECODES - 1) + "2D"
    past_limit = "x%" + "25" * MAX_DECODES + "2D"
    assert decoded(at_limit) == "x-"
    assert not escaped_past_limit(at_limit)
    assert escaped_past_limit(past_limit)


def test_decodings_give_each_spelling_and_stop_when_nothing_changes() -> None:
    assert list(decodings(b"a%25252Db")) == [b"a%25252Db", b"a%252Db", b"a%2Db", b"a-b"]
    assert list(decodings(b"plain")) == [b"plain"]
    assert list(decodings(b"50%")) == [b"50%"]
    deep = b"x%" + b"25" * 30 + b"2D"
    assert len(list(decodings(deep))) == 1 + MAX_DECODES
