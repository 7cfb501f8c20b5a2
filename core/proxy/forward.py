"""Forward: one request to the upstream, with key and target rotation.

The caller's credentials and client headers are stripped, the real key is set
(core/headers.py). Each request starts on the provider's next key and next target;
a refusal or overload before any byte reached the caller moves on to the next key, the
next target, or both (`next_attempt`, core/providers.py); a target that cannot be reached
hands the request to the next one, since nothing was sent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.errors import (
    BadRequest,
    InvalidUpstreamURL,
    TransportFailure,
    UpstreamUnreachable,
    map_transport_error,
)
from core.headers import upstream_request_headers
from core.providers import next_attempt

if TYPE_CHECKING:
    from core.config import Settings
    from core.request import ProxyRequest
    from core.upstream.client import UpstreamClient, UpstreamReply

logger = logging.getLogger("llm_proxy")


def never_reached(error: BaseException) -> bool:
    """The upstream was never reached: refused, unresolvable, or no connection in time from
    the proxy's own pool or the connect (a first-byte timeout is not: the request may be
    running there, and billed). Set by map_transport_error from the transport's failure."""
    return getattr(error, "never_sent", False) is True


class Forwarder:
    def __init__(self, settings: Settings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client

    async def __call__(self, request: ProxyRequest, body: bytes) -> UpstreamReply:
        """The upstream's reply to `request` with `body`, asked for uncompressed: the
        scrubber reads every reply, and the meter, a splice and stream recovery read some."""
        provider = request.provider
        path = request.remainder
        if request.query:
            path += "?" + request.query.decode("latin-1")
        # An upstream that compresses anyway is inflated by the scrubber.
        headers = upstream_request_headers(request.headers, request.credential)
        client = self.client
        keys = list(provider.keys.attempts())
        targets = provider.targets
        order = targets.order() if request.target is None else (request.target,)
        key_at = target_at = 0
        try:
            while True:
                key = keys[key_at]
                sent = [*headers, key] if key is not None else headers
                target = order[target_at]
                try:
                    response = await client.send(
                        request.method, targets.urls[target] + path, sent, body
                    )
                except TransportFailure as exc:
                    if not exc.never_sent or target_at + 1 == len(order):
                        raise
                    # Nothing was sent: the next target gets the request.
                    logger.warning("upstream target unreachable: %s", exc.kind)
                    target_at += 1
                    continue
                request.target = target
                if not 200 <= response.status_code <= 599:
                    # Any three digits parse as a status, but no server sends one past 599
                    # (uvicorn fails in its `send`, dropping the caller's connection), and
                    # a 1xx is no final answer: nothing the caller could read.
                    await response.aclose()
                    raise UpstreamUnreachable(
                        "The upstream provider answered with a status no reply may carry "
                        f"({response.status_code})."
                    )
                step = next_attempt(response.status_code, key_at, len(keys), target_at, len(order))
                if step is None:
                    return response
                # Refused or overloaded before any byte reached the caller: the next key,
                # or target, or both, get the same request (core/providers.py).
                await response.aclose()
                key_at, target_at = step
        except InvalidUpstreamURL:
            raise BadRequest("The request path is not a valid URL path.") from None
        except TransportFailure as exc:
            logger.warning("upstream request failed: %s", exc.kind)
            raise map_transport_error(exc, self.settings) from None
