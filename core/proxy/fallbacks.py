"""MODEL_FALLBACKS: when the model asked for cannot answer, the next one in its chain does.

`gpt-4o>claude-sonnet-4-5>gemini-2.5-pro`: a request for gpt-4o that meets a connect
failure, a 5xx or a 429 (after the provider's own keys and targets were each tried,
core/providers.py) goes again to claude-sonnet-4-5, then to gemini-2.5-pro, each through its
route (core/proxy/model_routes.py). Only before the first byte: once a reply has begun the
caller has it, and it is never replaced.

The next attempt is the same request with only the value of its top-level "model" changed
in the bytes (nothing else is re-serialised). It is another upstream call: the token and
the kill switch are checked again first, as before a stream's continuation, and it is
admitted, as the first was, by the checks on the body for the model that will serve it: the
token's scopes, the request policy, token limits and budget. A model the caller may not use
is skipped; when none is left the caller gets the last failure as it came. The caller
reads which model answered in `x-proxy-model`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from core.errors import ProxyError
from core.proxy.forward import never_reached
from core.stages import HeaderTicket, Outcome, reply_ticket

if TYPE_CHECKING:
    # The endpoint calls the chain; the chain calls back its forward, admit and settle.
    ProxyEndpoint = Any

    # The router (core/proxy/model_routes.py) builds this module's chains: named here by
    # type only, so the two never import each other.
    ModelRouter = Any
    from core.request import ProxyRequest
    from core.stages import Ticket
    from core.upstream.client import UpstreamReply

logger = logging.getLogger("llm_proxy")

# A model's own failure, not the request's: another model may well answer.
FALL_BACK_ON = frozenset({429, 500, 502, 503, 504, 529})


def model_value_span(body: bytes) -> tuple[int, int] | None:
    """Where the value of the body's one top-level "model" member sits (string quotes
    included), or None: no such member, a value that is not a plain string, or the name
    written twice or with escapes (the bytes would then say something other than the
    parsed document, and a rewrite could leave the upstream reading the old model)."""
    spans: list[tuple[int, int]] = []
    depth = 0
    index = 0
    length = len(body)
    while index < length:
        byte = body[index]
        if byte == 0x22:  # a string: find its end
            end = _string_end(body, index)
            if end < 0:
                return None
            if depth == 1:
                name = body[index + 1 : end - 1]
                rest = index = end
                while rest < length and body[rest] in b" \t\r\n":
                    rest += 1
                if rest < length and body[rest] == 0x3A:  # a member name
                    if b"\\" in name and _decoded(name) == "model":
                        return None
                    if name == b"model":
                        start = rest + 1
                        while start < length and body[start] in b" \t\r\n":
                            start += 1
                        if start >= length or body[start] != 0x22:
                            return None
                        value_end = _string_end(body, start)
                        if value_end < 0:
                            return None
                        spans.append((start, value_end))
                        index = value_end
                continue
            index = end
            continue
        if byte in (0x7B, 0x5B):
            depth += 1
        elif byte in (0x7D, 0x5D):
            depth -= 1
        index += 1
    return spans[0] if len(spans) == 1 else None


def _decoded(name: bytes) -> str:
    try:
        return str(json.loads(b'"' + name + b'"'))
    except ValueError:
        return ""


def _string_end(body: bytes, start: int) -> int:
    """The offset just past the closing quote of the string opening at `start`, or -1."""
    index = start + 1
    length = len(body)
    while index < length:
        byte = body[index]
        if byte == 0x5C:
            index += 2
            continue
        if byte == 0x22:
            return index + 1
        index += 1
    return -1


def with_model(body: bytes, model: str) -> bytes | None:
    """`body` with its top-level model's value replaced by `model`, or None if the value
    cannot be found unambiguously."""
    span = model_value_span(body)
    if span is None:
        return None
    start, end = span
    return body[:start] + json.dumps(model).encode() + body[end:]


# The header that tells the caller which model answered (exposed to browsers by CORS).
MODEL_HEADER = b"x-proxy-model"


# Bytes no server sends in a header value (uvicorn and h11 raise on them): the caller wrote
# the model name, and a raise there comes after the upstream has answered and billed.
_NOT_IN_HEADER = re.compile(rb"[\x00-\x1f\x7f]")


def _model_header(model: str) -> tuple[bytes, bytes]:
    return MODEL_HEADER, _NOT_IN_HEADER.sub(b"?", model.encode("latin-1", "replace")[:200])


class ModelTicket(HeaderTicket):
    """Tells the caller which model answers (`x-proxy-model`). It also marks where the
    checks on the body start in the request's tickets: a fallback replaces those."""

    def __init__(self, model: str) -> None:
        super().__init__([_model_header(model)])

    def name(self, model: str) -> None:
        self.headers[0] = _model_header(model)


class ModelFallbacks:
    def __init__(self, chains: tuple[tuple[str, ...], ...], router: ModelRouter) -> None:
        # For each model, the models after it in its chain.
        self.after: dict[str, tuple[str, ...]] = {}
        for chain in chains:
            for at, model in enumerate(chain[:-1]):
                self.after[model] = chain[at + 1 :]
        self.router = router

    async def forward(
        self,
        endpoint: ProxyEndpoint,
        request: ProxyRequest,
        tickets: list[Ticket],
        state: Any,
        body: bytes,
    ) -> UpstreamReply:
        """`endpoint.forward`, moving down the model's chain while the answer is a failure
        another model could avoid."""
        marker = next((t for t in tickets if isinstance(t, ModelTicket)), None)
        model = await request.model() if marker is not None else None
        rest = self.after.get(model, ()) if model is not None else ()
        if not rest:
            return await endpoint.forward(request, body)
        assert marker is not None
        spliced = body is not request.body  # include_usage was spliced in for the meter
        while True:
            failure: UpstreamReply | ProxyError
            try:
                response = await endpoint.forward(request, body)
            except ProxyError as error:
                if not rest or not never_reached(error):
                    raise
                # Kept without its traceback, which holds this frame (and so `failure`).
                failure = error.with_traceback(None)
                status = None
            else:
                if not rest or response.status_code not in FALL_BACK_ON:
                    return response
                failure = response
                status = response.status_code
            try:
                rest, moved = await self._next(
                    endpoint, request, tickets, marker, state, rest, status
                )
            except BaseException:
                # The rules refused the next call (_next): the failed reply is let go of.
                if not isinstance(failure, ProxyError):
                    await failure.aclose()
                raise
            if not moved:
                if isinstance(failure, ProxyError):
                    # Raised from here, its traceback holds this frame: the local goes first.
                    try:
                        raise failure
                    finally:
                        del failure
                return failure
            logger.warning(
                "model fallback: %s answered %s, trying %s",
                model,
                status or type(failure).__name__,
                await request.model(),
            )
            if not isinstance(failure, ProxyError):
                await failure.aclose()
            model = await request.model()
            body = request.body
            if spliced and request.wire.stream_needs_usage_request(
                request.route, await request.document()
            ):
                from core.usage.splice import ask_for_stream_usage

                body = ask_for_stream_usage(body, await request.document())

    async def _next(
        self,
        endpoint: ProxyEndpoint,
        request: ProxyRequest,
        tickets: list[Ticket],
        marker: ModelTicket,
        state: Any,
        rest: tuple[str, ...],
        status: int | None,
    ) -> tuple[tuple[str, ...], bool]:
        """Move `request` to the first model of `rest` the caller may use; the models left
        after it, and whether it moved."""
        checks = endpoint.pipeline.after_body
        at = tickets.index(marker) + 1
        document = await request.document()
        # `models` (OpenRouter's list, tried in turn) may only repeat `model`: rewriting
        # `model` alone would leave it naming the failed model for a provider that reads it.
        if (
            model_value_span(request.body) is None
            or not isinstance(document, dict)
            or "models" in document
        ):
            logger.warning("model fallback: the request's model cannot be rewritten")
            return (), False
        # The failed attempt spent nothing: its reservations are given back first, so the
        # next model's reservation has the room they held. What stays is their headers
        # (the caller's rate-limit figures), should no model be admitted.
        released = tickets[at:]
        for ticket in released:
            await ticket.settle(Outcome(upstream_status=status))
        tickets[at:] = [HeaderTicket(list(t.headers)) for t in released if t.headers]
        state.copy = None
        # The next model is another upstream call, as a stream's continuation is: the token
        # and the kill switch are checked again first (revoked or switched off while the
        # failed attempt was awaited, no further call is made: the open checks' period may
        # not have come round). Their refusal ends the chain, and the request is settled as
        # the failed attempt left it, which spent nothing.
        try:
            await endpoint.recheck(request)
        except ProxyError:
            if status is None:
                state.outcome.sent = False  # the connection was never made
            else:
                state.outcome.upstream_status = status
            raise
        while rest:
            candidate, rest = rest[0], rest[1:]
            saved = (request.body, document, request.provider)
            body = with_model(request.body, candidate)
            assert body is not None  # the span was found above
            request.body = body
            request.use_document({**document, "model": candidate})
            admitted: list[Ticket] = []
            try:
                await self.router.reroute(request, candidate)
                await endpoint.admit(request, checks, admitted)
            except ProxyError as refusal:
                # Not for this caller (scope, policy, limit, budget): the next one may be.
                logger.info("model fallback: %s skipped (%s)", candidate, refusal.code)
                for ticket in admitted:
                    await ticket.settle(Outcome())
                request.body = saved[0]
                request.use_document(saved[1])
                request.provider = saved[2]
                if request.log is not None:
                    request.log.route = saved[2].name
                continue
            copy = reply_ticket(admitted)
            if copy is not None and copy.replay is not None:
                # A stored reply for the next model is not replayed mid-exchange: the call
                # is made and refreshes it (and is reported as a miss, not a hit).
                copy.call_instead(request.log)
            tickets[at:] = admitted
            state.copy = copy
            # The target index the last attempt pinned is the last provider's, not this one's.
            request.target = None
            marker.name(candidate)
            return rest, True
        return (), False
