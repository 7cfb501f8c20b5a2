"""The relay (core/proxy/relay.py): what the caller is sent, and what the access log says
it was sent, for a streamed reply and a whole one, however the stream ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from core.config import load_settings
from core.errors import UpstreamStreamBroken
from core.proxy.relay import Exchange, relay
from core.proxy.scrub import Scrubber
from core.proxy.taps import build_taps
from core.types import Message, RequestLog
from tests.support.servers import proxy_env

KEY = "sk-fake-relay-key-0123456789"
SSE = [(b"content-type", b"text/event-stream")]
EVENTS = [b"data: a\n\n", b"data: " + KEY.encode() + b"\n\n", b"data: [DONE]\n\n"]


class Source:
    def __init__(self, chunks: list[bytes], breaks: bool = False, length: int | None = None):
        self.status_code = 200
        self.raw_headers = SSE if length is None else [(b"content-length", b"%d" % length)]
        self.stream_errors = (httpx.ReadError,)
        self._chunks = chunks
        self._breaks = breaks

    @property
    def stream(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._breaks:
            raise httpx.ReadError("cut")


def _log() -> RequestLog:
    log = RequestLog(request_id="r", method="POST", path="/v1/chat/completions")
    log.started = 0.0
    return log


async def _relay(
    source: Source, leave_after: int | None = None, length: int | None = None
) -> tuple[bytes, RequestLog, Exchange]:
    """Relays `source` through the scrubber; the caller leaves after `leave_after` body
    messages. Returns what the caller got, the log and the exchange."""
    log, exchange = _log(), Exchange()
    taps = build_taps(status=200, headers=SSE, scrubber=Scrubber([KEY]), log=log, length=length)
    got: list[bytes] = []

    async def send(message: Message) -> None:
        assert message["type"] == "http.response.start"

    async def body_send(message: Message) -> None:
        got.append(message["body"])
        if leave_after is not None and len(got) == leave_after:
            exchange.outcome.caller_left = True

    async def settle() -> None:
        pass

    settings = load_settings(proxy_env("http://upstream.invalid"))
    await relay(source, SSE, length, taps, exchange, send, body_send, settle, settings)
    return b"".join(got), log, exchange


async def test_the_log_counts_the_bytes_the_caller_got_after_the_taps() -> None:
    sent, log, exchange = await _relay(Source(EVENTS))
    assert KEY.encode() not in sent and b"[redacted]" in sent
    assert log.bytes_out == len(sent)
    assert log.first_byte_ms is not None
    assert exchange.outcome.complete


async def test_a_whole_body_is_counted_once() -> None:
    body = b'{"echo":"' + KEY.encode() + b'"}'
    sent, log, _ = await _relay(Source([body[:7], body[7:]], length=len(body)), length=len(body))
    assert sent == b'{"echo":"[redacted]"}'
    assert log.bytes_out == len(sent)
    assert log.first_byte_ms is not None


async def test_nothing_is_counted_once_the_caller_left() -> None:
    sent, log, exchange = await _relay(Source(EVENTS), leave_after=1)
    assert sent == EVENTS[0]
    assert log.bytes_out == len(EVENTS[0])
    assert exchange.outcome.caller_left


async def test_a_broken_stream_still_logs_what_was_sent() -> None:
    log, exchange = _log(), Exchange()
    taps = build_taps(status=200, headers=SSE, log=log)
    got: list[bytes] = []

    async def body_send(message: Message) -> None:
        got.append(message["body"])

    async def nothing(message: Message | None = None) -> None:
        pass

    async def settle() -> None:
        pass

    settings = load_settings(proxy_env("http://upstream.invalid"))
    with pytest.raises(UpstreamStreamBroken):
        await relay(
            Source(EVENTS[:1], breaks=True),
            SSE,
            None,
            taps,
            exchange,
            nothing,
            body_send,
            settle,
            settings,
        )
    assert got == EVENTS[:1]
    assert log.bytes_out == len(EVENTS[0])
    assert not exchange.outcome.complete


async def test_a_caller_hanging_up_while_a_finished_stream_settles_has_not_left_early() -> None:
    """The openai SDKs close the connection once they read [DONE], which can land while the
    relay settles: by then the stream is complete, and the disconnect listener must read it
    so (`response_done`), or the log and the ledger call a complete stream a disconnect. A
    whole body is not sent until after settling: a hang-up then is a caller leaving."""
    seen: list[bool] = []
    settings = load_settings(proxy_env("http://upstream.invalid"))

    async def nothing(message: Message) -> None:
        pass

    for source, length in ((Source(EVENTS), None), (Source([b"{}"], length=2), 2)):
        exchange = Exchange()
        taps = build_taps(status=200, headers=SSE, log=_log(), length=length)

        async def settle(exchange: Exchange = exchange) -> None:
            seen.append(exchange.response_done)

        await relay(source, SSE, length, taps, exchange, nothing, nothing, settle, settings)
        assert exchange.response_done
    assert seen == [True, False]
