"""Gemini's resumable uploads (`files.upload`) through the proxy.

The protocol has two legs. The start leg (`x-goog-upload-command: start`) is an ordinary
authenticated call; the upstream answers with `x-goog-upload-url` (and
`x-goog-upload-control-url`), a URL on its own host that carries an `upload_id`. The upload
leg posts the raw bytes there (`upload, finalize`).

Handed back verbatim, that URL would send the bytes around the proxy, straight to the
provider (or to a private upstream's address). So the proxy rewrites it to its own public
origin, under the provider's prefix, keeping the upload_id, and remembers the upload_id as
issued to the caller who started the session. google-genai (Python) sends the upload leg
with no credential at all, so the upload_id is its authorization: only an upload_id this
proxy handed out recently, to an authenticated caller, is accepted, and only while the
token that started it is still valid (checked again on each leg: a revoked, disabled or
expired token, or a shared token rotated out, ends its uploads; a token whose scopes
narrowed past the provider is refused, as its own request would be) and never past the expiry
of the credential that started it (a JWT's `exp`: a sign-in cannot be looked up again). The bytes still go only
to the configured upstream; no host named in a request is ever used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import parse_qsl, urlsplit

from core.access.credentials import TokenStoreUnavailable
from core.caller import SHARED_TOKEN_CALLER, Caller
from core.digest import sha256
from core.errors import BadRequest, Unauthorized
from core.headers import digest_in_url, holds_digest, public_origin, split_key_param
from core.protocols import route_path

if TYPE_CHECKING:
    from core.access.credentials import TokenCheck
    from core.headers import RawHeaders
    from core.providers import Provider
    from core.request import ProxyRequest
    from core.stores import Store

# Headers of a Gemini reply that hand the caller a URL on the upstream's host: the upload
# URLs, and the Location (and Content-Location) an upload's start leg may carry. Each is
# pointed at the proxy, or dropped.
UPLOAD_URL_HEADERS = frozenset(
    {b"x-goog-upload-url", b"x-goog-upload-control-url", b"location", b"content-location"}
)
# How long an upload_id handed out by the proxy is honoured: a large upload resumed later
# in the day still works; Google keeps a session about a week.
SESSION_SECONDS = 24 * 3600
# Sessions remembered in memory when there is no token store: the oldest go first.
MEMORY_SESSIONS = 10_000
_MAX_UPLOAD_ID = 512
_STORE_PREFIX = "upload:"

logger = logging.getLogger("llm_proxy")


def _store_failed(doing: str, exc: BaseException) -> NoReturn:
    """A failing session store as the token store's 503 (the sessions live there): a
    passing fault, worth the SDK's retry, never the proxy's 500. The type only is logged:
    a driver's message may quote the store URL and its password."""
    logger.error("upload session %s failed: %s", doing, type(exc).__name__)
    raise TokenStoreUnavailable("The proxy's token store is unavailable; try again.") from None


class UnknownUploadSession(Unauthorized):
    code = "unknown_upload_session"


# On a refused upload leg: without an upload status the SDKs retry the same refused chunk.
_FINAL = {"x-goog-upload-status": "final"}


def is_upload_path(path: str) -> bool:
    """The upload leg's path, normalised (`/upload/v1beta/files`, `/upload/v1beta/
    fileSearchStores/x:uploadToFileSearchStore`)."""
    return path.startswith("/upload/")


def upload_id_of(query: bytes) -> str | None:
    """The one `upload_id` of a query string. Named twice is refused: the proxy would check
    one value while the upstream honoured the other."""
    if b"upload" not in query.lower() and b"%" not in query:
        return None
    found = [
        value
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        # `UPLOAD_ID`, `%75pload_id` (decoded here) and `uploadId` are one name upstream.
        if name.replace("_", "").lower() == "uploadid"
    ]
    if not found:
        return None
    if len(found) > 1:
        raise BadRequest("The upload URL names upload_id more than once.")
    value = found[0]
    if not value or len(value) > _MAX_UPLOAD_ID or not value.isprintable():
        raise BadRequest("The upload URL's upload_id is not valid.")
    return value


def names_upload_id(query: bytes) -> bool:
    """Whether a query names an upload_id, well or badly: the request is an upload leg to
    its client (google-genai), whatever the proxy refuses it for."""
    try:
        return upload_id_of(query) is not None
    except BadRequest:
        return True


def root_upload_route(
    providers: tuple[Provider, ...], path: str, query: bytes
) -> tuple[Provider, str] | None:
    """@google/genai (Node) swaps the proxy's host into the upload URL it was given; from an
    upload URL that lost the provider's prefix it would post `/upload/...?upload_id=` at the
    root. Such a request goes to the Gemini route, and only with an upload_id."""
    if not path.startswith("/upload/") or b"upload_id" not in query.lower():
        return None
    for provider in providers:
        if provider.resumable_uploads:
            return provider, path
    return None


def proxy_upload_url(
    upstream_url: str, provider: Provider, origin: str, target: int = 0
) -> tuple[str, str] | None:
    """The upstream's upload URL on the proxy, under the provider's prefix, with the same
    path and query (less any `key`), and that path after the prefix; None for a URL the
    proxy could not route back to the target that issued it."""
    parts = urlsplit(upstream_url)
    base = provider.targets.base_paths[target]
    if not parts.path.startswith(base + "/"):
        return None
    remainder = parts.path[len(base) :]
    _, query = split_key_param(parts.query.encode("latin-1"))
    url = origin + provider.prefix + remainder
    return (url + "?" + query.decode("latin-1") if query else url), remainder


@dataclass(frozen=True)
class UploadSession:
    """What the proxy remembers of an upload_id it handed out."""

    caller: str
    counted_as: str
    # The target that started it (an index into the provider's configured targets).
    target: int
    # The path it was issued for (normalised, after the provider's prefix): the upload_id
    # opens that path and no other.
    path: str
    # SHA-256 (hex) of the proxy token that started it, checked again on each leg; empty
    # for a caller with no token to revoke (anonymous, a JWT user).
    token: str = ""
    # When the credential that started it expires (a JWT's `exp`, a stored token's expiry),
    # as a UNIX time; 0 for one that does not. A JWT cannot be looked up again, so this is
    # what ends its uploads: the upload_id must not outlive the sign-in that made it.
    expires_at: float = 0.0


class UploadSessions:
    """The upload_ids the proxy handed out, by SHA-256, with who started each: in the token
    store when one is configured (every instance sees them), else in this process's memory
    (bounded, oldest dropped first)."""

    def __init__(self, store: Store | None, token_check: TokenCheck | None = None) -> None:
        self.store = store
        self.token_check = token_check
        self._memory: OrderedDict[str, tuple[float, UploadSession]] = OrderedDict()

    @staticmethod
    def _key(upload_id: str) -> str:
        return _STORE_PREFIX + sha256(upload_id).hex()

    async def issue(self, upload_id: str, session: UploadSession) -> None:
        key = self._key(upload_id)
        expires_at = time.time() + SESSION_SECONDS
        if session.expires_at:
            expires_at = min(expires_at, session.expires_at)
        store = self.store
        if store is None:
            memory = self._memory
            memory[key] = (expires_at, session)
            memory.move_to_end(key)
            while len(memory) > MEMORY_SESSIONS:
                memory.popitem(last=False)
            return
        doc = asdict(session)
        try:
            if store.blocking:
                await asyncio.to_thread(store.put, key, doc, expires_at=expires_at)
            else:
                store.put(key, doc, expires_at=expires_at)
        except Exception as exc:
            _store_failed("write", exc)

    async def find(self, upload_id: str) -> UploadSession | None:
        """The session of an upload_id the proxy issued and that has not expired. A store
        that fails is a 503 (TokenStoreUnavailable: the sessions live in the token store),
        as a token lookup's is: a passing fault, worth the SDK's retry, never a 500."""
        key = self._key(upload_id)
        store = self.store
        if store is None:
            entry = self._memory.get(key)
            if entry is None or entry[0] <= time.time():
                return None
            return entry[1]
        try:
            item = await asyncio.to_thread(store.get, key) if store.blocking else store.get(key)
        except Exception as exc:
            _store_failed("lookup", exc)
        if item is None:
            return None
        doc = item.doc
        target = doc.get("target")
        expires = doc.get("expires_at", 0.0)
        return UploadSession(
            caller=str(doc.get("caller", "upload")),
            counted_as=str(doc.get("counted_as", "")),
            target=target if isinstance(target, int) else -1,
            path=str(doc.get("path", "")),
            token=str(doc.get("token", "")),
            # Unreadable is treated as already expired: fail closed.
            expires_at=float(expires) if isinstance(expires, int | float) else 1.0,
        )

    async def admit_upload_leg(self, request: ProxyRequest) -> bool:
        """For an upload leg (an upload path with an upload_id), identify the caller by the
        session it started; False for any other request."""
        if not is_upload_path(request.path) or not request.provider.resumable_uploads:
            return False
        try:
            upload_id = upload_id_of(request.query)
        except BadRequest as refused:
            # Final like every other refusal of a leg: no retry sends this URL a valid id.
            refused.headers = {**refused.headers, **_FINAL}
            raise
        if upload_id is None:
            return False
        session = await self.find(upload_id)
        # Its session lives on the target that started it: an index, never a URL, and only
        # one that configuration still names.
        if (
            session is None
            or session.path != request.path
            or not 0 <= session.target < len(request.provider.targets)
        ):
            raise UnknownUploadSession(
                "This upload session was not started through this proxy, or it expired: "
                "start the upload again.",
                headers=_FINAL,
            )
        if session.expires_at and session.expires_at <= time.time():
            # A store may keep an item past its expiry (DynamoDB deletes late): checked here.
            raise UnknownUploadSession(
                "The sign-in that started this upload has expired: start the upload again "
                "with a valid credential.",
                headers=_FINAL,
            )
        # The token's fresh record, where it has one: the leg is then checked as the token's
        # own request would be (its scopes, which may have narrowed since the start).
        fresh = await self.check_token(session)
        if session.token and self.names_its_token(session, request):
            # The leg stands for the token that started the upload: that token in its URL
            # would reach the upstream and the access log, as it would from any request
            # (core/request.py refuses it there; a leg carries no credential to compare).
            if request.log is not None:
                request.log.path = "[redacted]"
            raise BadRequest(
                "The request's path or query holds the proxy credential: send it only where "
                "your SDK puts its key (a header, or Gemini's key= parameter).",
                headers=_FINAL,
            )
        if session.token:
            # Nor does it reach the upstream in another header (X-Auth-Token: <token>): as
            # upstream_request_headers drops a header carrying a request's own credential.
            digest = bytes.fromhex(session.token)
            request.headers = [
                (name, value) for name, value in request.headers if not holds_digest(digest, value)
            ]
        request.target = session.target
        if fresh is None:
            # No token to look up (a JWT's, an anonymous caller's): the leg's caller ends
            # when the credential that started the upload does, so a leg still open then
            # (its body arriving, its reply relayed) is checked again and stopped.
            fresh = Caller(session.caller, expires_at=session.expires_at or None)
        request.caller = fresh
        request.counted_as = session.counted_as or session.caller
        request.upload_leg = True
        if request.log is not None:
            request.log.caller = session.caller
        return True

    @staticmethod
    def names_its_token(session: UploadSession, request: ProxyRequest) -> bool:
        try:
            digest = bytes.fromhex(session.token)
        except ValueError:
            raise UnknownUploadSession(
                "This upload session is not valid.", headers=_FINAL
            ) from None
        return digest_in_url(digest, request.remainder, request.query)

    async def check_token(self, session: UploadSession) -> Caller | None:
        """The token that started the upload, checked again: revoked means the upload_id
        stops working at once (within TOKEN_CACHE_SECONDS), not when it expires. Returns
        that token's caller as it stands now (None: no token to look up)."""
        if not session.token or self.token_check is None:
            return None
        try:
            return await self.token_check.identify_digest(bytes.fromhex(session.token))
        except ValueError:
            raise UnknownUploadSession(
                "This upload session is not valid.", headers=_FINAL
            ) from None
        except Unauthorized:
            raise UnknownUploadSession(
                "The token that started this upload is no longer valid: start the upload "
                "again with a valid token.",
                headers=_FINAL,
            ) from None

    async def rewrite_reply(self, request: ProxyRequest, headers: RawHeaders) -> RawHeaders:
        """The reply's upload URLs pointed at the proxy, each upload_id remembered as issued
        to this caller. A URL that cannot be pointed at the proxy is dropped, never passed
        on: it would name the upstream's host."""
        if not any(name.lower() in UPLOAD_URL_HEADERS for name, _ in headers):
            return headers
        origin = public_origin(request.scope)
        caller = request.caller
        target = request.target or 0
        token = ""
        expires_at = (caller.expires_at or 0.0) if caller is not None else 0.0
        if request.upload_leg:
            # A leg carries no token of its own: an upload URL its reply hands out belongs
            # to the token that started the leg's session, and ends when it does, or it
            # would outlive that token (and each leg could mint the next, for ever).
            leg_id = upload_id_of(request.query)
            parent = await self.find(leg_id) if leg_id is not None else None
            if parent is None:
                caller = None  # its session ended meanwhile: nothing new is issued
            else:
                token, expires_at = parent.token, parent.expires_at
        elif (
            request.credential
            and caller is not None
            and (caller.record is not None or caller is SHARED_TOKEN_CALLER)
        ):
            token = sha256(request.credential).hex()
        kept: RawHeaders = []
        for name, value in headers:
            if name.lower() not in UPLOAD_URL_HEADERS:
                kept.append((name, value))
                continue
            url = value.decode("latin-1")
            found = proxy_upload_url(url, request.provider, origin, target) if origin else None
            if found is None:
                continue
            rewritten, remainder = found
            upload_id = upload_id_of(urlsplit(rewritten).query.encode("latin-1"))
            if upload_id is not None and caller is not None:
                label = caller.label
                session = UploadSession(
                    label,
                    request.counted_as or label,
                    target,
                    route_path(remainder),
                    token,
                    expires_at,
                )
                await self.issue(upload_id, session)
            kept.append((name, rewritten.encode("latin-1")))
        return kept


# ---- the upstream's address in file resources ----------------------------------------------
#
# A Gemini File resource (the upload's finalize reply, files.get, files.list) names the
# file by a URL on the upstream's host: `"uri": "<upstream>/v1beta/files/abc"`. Handed back
# verbatim it would name a private upstream's address; so in every Gemini reply the
# configured upstream's base URL is replaced by the proxy's own (`<proxy>/gemini`), and in
# every Gemini request the proxy's base is put back, so `fileData.fileUri` taken from such a
# File still reaches the model as the upstream's URI.


def _escaped(text: str) -> bytes:
    return text.replace("/", "\\/").encode("latin-1")  # as JSON may write it


def proxy_base(request: ProxyRequest) -> str:
    """The URL this caller reaches the provider's routes at, or just the prefix."""
    origin = public_origin(request.scope)
    return (origin or "") + request.provider.prefix


def address_rewrites(request: ProxyRequest) -> tuple[tuple[bytes, bytes], ...]:
    """(upstream base URL, proxy base URL) for every configured target, plain and with
    JSON's escaped solidus: what a Gemini reply's bytes get replaced."""
    base = proxy_base(request)
    pairs: list[tuple[bytes, bytes]] = []
    for url in request.provider.targets.urls:
        url = url.rstrip("/")
        pairs.append((url.encode("latin-1"), base.encode("latin-1")))
        pairs.append((_escaped(url), _escaped(base)))
    return tuple(pairs)


def restore_addresses(request: ProxyRequest, body: bytes) -> bytes:
    """A Gemini request body with the proxy's base URL put back to the upstream's (a
    `fileData.fileUri` copied from a File the proxy handed out)."""
    if request.upload_leg or not request.is_json:
        return body  # a file's own bytes are the caller's, never rewritten
    base = proxy_base(request)
    if not base.startswith("http"):
        return body
    plain, escaped = base.encode("latin-1"), _escaped(base)
    # Two finds and no copy for the common body that names no File.
    if plain not in body and escaped not in body:
        return body
    target = request.provider.targets.urls[request.target or 0].rstrip("/")
    body = body.replace(plain, target.encode("latin-1"))
    return body.replace(escaped, _escaped(target))
