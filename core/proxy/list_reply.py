"""A provider's model list, relayed filtered (core/access/model_lists.py says by what).

The list is read whole (a list is small; it is bounded all the same), inflated if the
upstream compressed it although asked not to (gzip, deflate: as the scrubber reads them),
filtered, and handed to the relay as a reply of its own: the same status and headers, the
coding gone and the length the filtered body's. The relay scrubs it and logs it as any
reply. A list that cannot be read (cut off, too large, in a coding or a shape the proxy
cannot read) is not relayed: a 502 in the caller's protocol, since the list unfiltered
could name what the caller may not use.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from core.errors import ProxyError, UpstreamUnreachable, forget_frames
from core.headers import content_coding

if TYPE_CHECKING:
    from core.access.model_lists import ListPage, ModelListTicket
    from core.stages import RawHeaders
    from core.upstream.client import UpstreamReply

# Far above any provider's list (OpenRouter's, the largest, is a few MB), compressed or not.
MAX_LIST_BYTES = 32 * 1024 * 1024
# Pages read past the one asked for, looking for one that shows something: a bound on the
# upstream calls one list request makes (Gemini's whole catalogue is two pages of 50).
MAX_PAGES_WALKED = 10
# Asks the upstream for the same list with another query (another page).
PageFetch = Callable[[bytes], Awaitable["UpstreamReply"]]


class ListUnreadable(UpstreamUnreachable):
    code = "model_list_unreadable"


class FilteredList:
    """The filtered list as a reply source (core/proxy/relay.py `ReplySource`)."""

    stream_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, status_code: int, raw_headers: RawHeaders, body: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body

    @property
    def stream(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    async def aclose(self) -> None:
        return None


def _unreadable(why: str) -> ListUnreadable:
    return ListUnreadable(
        f"The provider's model list could not be read ({why}), so it could not be held to "
        "the models this caller may use.",
        retryable=False,
    )


async def filtered_list(
    response: UpstreamReply, ticket: ModelListTicket, query: bytes, fetch: PageFetch
) -> FilteredList:
    """The 200 `response`, a model list page asked with `query`, read whole and filtered by
    `ticket`. A list that pages is read on (`fetch` asks the upstream for another page)
    until a later page shows something or the list ends, at most `MAX_PAGES_WALKED` pages:
    the SDKs stop paging at an empty page (the Stainless SDKs), or fail on one
    (google-genai), so a page comes back empty only at the list's end, and says there is
    more only where more would show."""
    try:
        return await _walk(response, ticket, query, fetch)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError among them
        raise _unreadable("not a model list") from None


async def _walk(
    response: UpstreamReply, ticket: ModelListTicket, query: bytes, fetch: PageFetch
) -> FilteredList:
    page = ticket.page(await _body(response))
    base, asked = page, query
    more = ticket.next_query(page, query)
    walked = 0
    while more is not None and walked < MAX_PAGES_WALKED:
        reply = await fetch(more)
        try:
            if reply.status_code != 200:
                raise _unreadable(f"a further page answered {reply.status_code}")
            later = ticket.page(await _body(reply))
        finally:
            await reply.aclose()
        walked += 1
        if later.kept and base.kept:
            break  # something to show past `base`: the caller is sent there next
        following = ticket.next_query(later, more)
        if not base.kept:
            base, asked = later, more  # nothing shown before it: the caller gets this page
        more = following
    if more is not None and ticket.wire.model_list_paging == "token":
        more = await _token_on(base, asked, ticket, fetch)
    body = ticket.render(base, more, walked > 0)
    headers = [
        (name, value)
        for name, value in response.raw_headers
        if name.lower() not in (b"content-length", b"content-encoding")
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    return FilteredList(response.status_code, headers, body)


async def _token_on(
    base: ListPage, asked: bytes, ticket: ModelListTicket, fetch: PageFetch
) -> bytes | None:
    """The query whose page token the caller is handed with `base` (asked with `asked`),
    a list paged by token with a model to show past it: the token that goes on from its
    last entry shown, never one past a page walked (that page's last entry is refused).
    None (the list ends here) when nothing is shown, or when the one more call that cuts
    the page short fails or answers another page: a leak is worse than a short list."""
    if not base.kept:
        return None  # walked to the bound and nothing shown: any token names a refused one
    cut = ticket.cut_query(base, asked)
    if cut is None:
        return ticket.next_query(base, asked)  # its last entry is shown: its own token
    try:
        reply = await fetch(cut)
    except ProxyError:
        return None
    try:
        if reply.status_code != 200:
            return None
        return ticket.cut_next(base, ticket.page(await _body(reply)), cut)
    except (ValueError, RecursionError, ProxyError):
        return None
    finally:
        await reply.aclose()


async def _body(response: UpstreamReply) -> bytes:
    """A list page's body whole, inflated; ListUnreadable when it cannot be read."""
    chunks = []
    size = 0
    try:
        async for chunk in response.stream:
            size += len(chunk)
            if size > MAX_LIST_BYTES:
                raise _unreadable("too large")
            chunks.append(chunk)
    except response.stream_errors as exc:
        forget_frames(exc)  # the transport keeps it: core/errors.py
        raise _unreadable("cut off") from None
    body = b"".join(chunks)
    coding = content_coding(response.raw_headers)
    return _inflated(body, coding) if coding else body


def _inflated(body: bytes, coding: bytes) -> bytes:
    if coding in (b"gzip", b"x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == b"deflate":
        inflater = zlib.decompressobj()
    else:
        raise _unreadable(f"compressed as {coding[:40].decode('latin-1')!r}")
    try:
        data = inflater.decompress(body, MAX_LIST_BYTES)
    except zlib.error:
        raise _unreadable("its compression is broken") from None
    if inflater.unconsumed_tail:
        raise _unreadable("too large")
    return data
