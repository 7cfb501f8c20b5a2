"""The byte test the reply's hot paths use (core/byte_tests.py) says what `in` says, on
this interpreter: a release that copies where it returned the object itself fails here."""

from __future__ import annotations

import pytest

from core.byte_tests import absent

EVENT = b'data: {"choices":[{"delta":{"content":"word "}}],"usage":null}\n\n'


@pytest.mark.parametrize(
    "needle", [b"\\", b"\\u", b"sage", b"-not-real", b"\n\n", b"data", b'"usage":null', b"x"]
)
@pytest.mark.parametrize("data", [EVENT, b"", b"\\u0075sage", EVENT * 40, b"sage" * 3])
def test_absent_is_not_in(needle: bytes, data: bytes) -> None:
    assert absent(needle, data) is (needle not in data)


def test_a_chunk_that_is_not_exact_bytes_reads_as_present() -> None:
    """The safe side: a bytearray (or a bytes subclass) is copied, so the hot path takes
    the long way for it; it is never told a needle is absent when it is not."""

    class Chunk(bytes):
        pass

    assert absent(b"q", Chunk(EVENT)) is False
    assert absent(b"q", bytearray(EVENT)) is False  # type: ignore[arg-type]
