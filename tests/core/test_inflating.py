"""A compressed body inflated whole (core/inflating.py), as the meter and the scrubber read
it: every member of a gzip body, every byte of a chunk that stands for megabytes."""

from __future__ import annotations

import gzip
import zlib

import pytest

from core.inflating import Inflater


def _all(inflater: Inflater, chunks: list[bytes], step: int = 1024) -> bytes:
    return b"".join(piece for chunk in chunks for piece in inflater.pieces(chunk, step))


def test_gzip_members_one_after_another_are_all_inflated() -> None:
    members = [gzip.compress(f"member {n}\n".encode()) for n in range(3)]
    assert _all(Inflater(b"gzip"), [b"".join(members)]) == b"member 0\nmember 1\nmember 2\n"
    # Split anywhere, a member's end and the next one's start in one chunk included.
    joined = b"".join(members)
    split = [joined[i : i + 7] for i in range(0, len(joined), 7)]
    assert _all(Inflater(b"x-gzip"), split) == b"member 0\nmember 1\nmember 2\n"


def test_a_small_chunk_that_stands_for_much_is_inflated_in_bounded_pieces() -> None:
    body = b"z" * 3_000_000
    pieces = list(Inflater(b"gzip").pieces(gzip.compress(body), 65536))
    assert b"".join(pieces) == body
    assert max(len(piece) for piece in pieces) <= 65536


def test_deflate_is_one_stream_and_what_follows_its_end_is_an_error() -> None:
    compressor = zlib.compressobj()
    stream = compressor.compress(b"hello") + compressor.flush()
    assert _all(Inflater(b"deflate"), [stream]) == b"hello"
    with pytest.raises(zlib.error):
        _all(Inflater(b"deflate"), [stream + stream])


def test_bytes_that_are_not_the_encoding_are_an_error() -> None:
    with pytest.raises(zlib.error):
        _all(Inflater(b"gzip"), [b"not gzip at all"])
