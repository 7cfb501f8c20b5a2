"""An error reply streamed in pieces reaches the caller whole, with the key redacted even
where it is split across pieces: the scrubber holds back a key's length at each piece's end,
and that held-back tail must be sent when the body ends."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.metered import AUTH, metered
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_UPSTREAM_KEY

ERROR_HEADERS = [("content-type", "application/json")]


def _error_body(filler: int) -> bytes:
    # An upstream echoing the request, key included, inside a long error document.
    document = {
        "error": {
            "message": "x" * filler + f" Incorrect API key provided: {FAKE_UPSTREAM_KEY}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    return json.dumps(document).encode()


@pytest.mark.parametrize("filler", [10, 70_000])  # under and over the proxy's small-body bound
@pytest.mark.parametrize("piece", [7, 1000])  # key split across pieces, or a whole key in one
def test_a_streamed_error_arrives_whole_and_scrubbed(filler: int, piece: int) -> None:
    body = _error_body(filler)
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]

    def reply(request: dict[str, Any]) -> Any:
        return 401, ERROR_HEADERS, [(0, p) for p in pieces]

    with metered(ScriptedUpstream(reply)) as proxy:
        got = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers=AUTH,
            timeout=30,
        )
    assert got.status_code == 401
    assert FAKE_UPSTREAM_KEY not in got.text
    assert got.content == body.replace(FAKE_UPSTREAM_KEY.encode(), b"[redacted]")
    assert got.json()["error"]["code"] == "invalid_api_key"  # the tail is there


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_streamed_error_is_inflated_and_scrubbed(coding: str) -> None:
    import zlib

    body = _error_body(70_000)
    packer = zlib.compressobj(wbits=31 if coding == "gzip" else 15)
    packed = packer.compress(body) + packer.flush()
    pieces = [packed[i : i + 333] for i in range(0, len(packed), 333)]
    headers = [*ERROR_HEADERS, ("content-encoding", coding)]

    def reply(request: dict[str, Any]) -> Any:
        return 401, headers, [(0, p) for p in pieces]

    with metered(ScriptedUpstream(reply)) as proxy:
        got = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**AUTH, "accept-encoding": coding},
            timeout=30,
        )
    assert got.status_code == 401
    assert "content-encoding" not in got.headers  # sent as the proxy could read it
    assert got.content == body.replace(FAKE_UPSTREAM_KEY.encode(), b"[redacted]")


def test_an_error_in_a_coding_the_proxy_cannot_read_is_not_passed_on() -> None:
    body = b"\x00\x01 opaque bytes that may hide " + FAKE_UPSTREAM_KEY.encode()

    def reply(request: dict[str, Any]) -> Any:
        return 401, [*ERROR_HEADERS, ("content-encoding", "br")], [(0, body)]

    with metered(ScriptedUpstream(reply)) as proxy:
        got = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers=AUTH,
            timeout=30,
        )
    assert got.status_code == 401
    assert FAKE_UPSTREAM_KEY.encode() not in got.content


MIB = 1024 * 1024


def _send_error_pieces(pieces: list[bytes], coding: str, delay: float = 0) -> httpx.Response:
    headers = [*ERROR_HEADERS, ("content-encoding", coding)]

    def reply(request: dict[str, Any]) -> Any:
        return 401, headers, [(delay, p) for p in pieces]

    with metered(ScriptedUpstream(reply)) as proxy:
        return httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**AUTH, "accept-encoding": coding},
            timeout=60,
        )


def test_a_compressed_error_inflates_to_one_mib_at_most() -> None:
    import zlib

    # A small gzip body that inflates to 3 MiB (a decompression bomb), the key past the cap.
    body = b"a" * (3 * MIB) + FAKE_UPSTREAM_KEY.encode()
    packer = zlib.compressobj(wbits=31)
    packed = packer.compress(body) + packer.flush()
    got = _send_error_pieces([packed[i : i + 512] for i in range(0, len(packed), 512)], "gzip")
    assert got.status_code == 401
    assert got.content == body[:MIB]  # the first MiB, nothing more, nothing invented


def test_a_corrupt_compressed_error_stops_where_it_breaks() -> None:
    import zlib

    body = _error_body(10)
    packer = zlib.compressobj(wbits=31)
    packed = packer.compress(body) + packer.flush(zlib.Z_SYNC_FLUSH)
    # Readable up to here, then bytes that are no deflate stream at all.
    # Apart in time, so each arrives as its own read.
    got = _send_error_pieces([packed, b"\xff" * 64, b"more after the break"], "gzip", 0.2)
    assert got.status_code == 401
    assert got.content == body.replace(FAKE_UPSTREAM_KEY.encode(), b"[redacted]")
