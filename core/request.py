"""One request as the stages see it, built once: headers scanned once, JSON parsed at most
once and only when a stage asks for it.

The body is read after the caller is identified and admitted on what the head says, so a
caller who may not call spends no memory or parsing on the proxy.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import TYPE_CHECKING, Any

from core.errors import BadRequest, MethodNotAllowed, PayloadTooLarge, Unauthorized
from core.escapes import MAX_DECODES, decoded, still_escaped
from core.headers import credential_in_url, find_credential, split_key_params
from core.protocols import (
    CONVERSATIONS,
    MODEL_IN_FORM,
    MODERATION,
    UNREADABLE,
    AmbiguousModel,
    Route,
    decoded_path,
    overriding_parameter,
    route_path,
    transcription_models,
)
from core.text import well_formed

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.caller import Caller
    from core.protocols import Wire
    from core.providers import Provider
    from core.types import Receive, RequestLog, Scope

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
# Bodies above this size are parsed on a worker thread: the event loop keeps serving every
# other request while a large document is decoded.
_PARSE_OFF_LOOP = 256 * 1024
_NOT_PARSED: Any = object()


class RepeatedField(BadRequest):
    code = "repeated_field"


class NotUnicode(BadRequest):
    """A name the rules, the ledger and telemetry key on, spelled with a lone surrogate
    (`"\\ud800"`: valid JSON, yet no UTF-8 encoder takes it). Unrefused, it reached the
    ledger's store key and broke the reply after its last byte was relayed."""

    code = "invalid_text"


# Short enough for a WebSocket close reason (123 bytes): a realtime session refuses so.
_NOT_UNICODE = (
    "The {what} name holds an escape that is not Unicode text (a lone surrogate, \\ud800)."
)


_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x1f\x7f\\]")
# A header value that could split a header line when sent on.
_LINE_BREAK_OR_NUL = re.compile(rb"[\r\n\x00]").search


# Headers that tell a server to run another method than the request line's (Google's API
# platform reads X-HTTP-Method-Override, as do many web frameworks): the proxy classifies
# a request by its own method, and a GET is a free read to it.
_METHOD_OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})


class WebSocketUnsupported(BadRequest):
    code = "websocket_unsupported"


# A WebSocket handshake that reached the HTTP path: the platform (a function: Lambda,
# Vercel, Cloud Run functions) cannot hold the connection, or the server has no WebSocket
# support. On servers the proxy relays WebSockets itself (core/realtime/session.py).
WEBSOCKET_UNSUPPORTED = (
    "This deployment of the proxy cannot hold WebSocket connections. For a realtime "
    "session from a browser or app, mint a short-lived key through the proxy "
    "(POST /v1/realtime/client_secrets for OpenAI, POST /gemini/v1alpha/auth_tokens for "
    "Gemini; the operator sets ALLOW_EPHEMERAL_KEYS=true) and connect to the provider with "
    "it, or run the proxy as a server (llm-proxy serve, a container, Cloud Run)."
)


def check_path(remainder: str) -> None:
    """Refuse paths that try to climb out of the route or smuggle separators."""
    if "#" in remainder or "?" in remainder:
        # Not in any request target (RFC 9112: the server cut the query off already), yet
        # h11 passes a `#` on: the route would be read past it, while the upstream URL
        # ends there (a fragment is never sent), so `/v1/messages#/messages/count_tokens`
        # was checked as a free count and generated unmetered upstream.
        raise BadRequest(
            "The request path holds a '#' or '?': a fragment is never part of a request; "
            "escape the character (%23, %3F) if it belongs to the path."
        )
    path = decoded(remainder)
    if still_escaped(path):
        # No client escapes a path this deep; a reader that decodes once more than the
        # checks below would get a path they never saw (core/escapes.py).
        raise BadRequest(
            f"The request path is percent-escaped more than {MAX_DECODES} times over; "
            "send it escaped once."
        )
    if _FORBIDDEN_IN_PATH.search(path):
        raise BadRequest("The request path contains a forbidden character.")
    for segment in path.split("/"):
        # `..;x` is `..` to servlet containers (path parameters), which many gateways are.
        if segment.partition(";")[0] in (".", ".."):
            raise BadRequest("The request path may not contain '.' or '..' segments.")


def _field_key(name: str) -> str:
    # `max_tokens`, `MAX_TOKENS`, `maxTokens` and `generation_config` / `generationConfig`
    # are one field to some upstream. `casefold`, not `lower`: Go's encoding/json matches
    # names with Unicode folding, so `max_token` + U+017F (long s) is `max_tokens` to it.
    return name.replace("_", "").casefold()


def _plainly_spelled(name: str) -> bool:
    """snake_case or lowerCamelCase in ASCII: how every SDK spells a field, and the only
    spellings the rules read. `N`, `Model` or U+017F + `tream` alone is `n`, `model` or `stream`
    to a case-insensitive reader (Go's encoding/json) yet nothing the proxy read."""
    return name.isascii() and (name.islower() or (name[:1].islower() and "_" not in name))


def _check_spellings(document: Any, policed: frozenset[str]) -> None:
    """The top level of a body, where the rules read: a policed field spelled otherwise
    than plainly is refused. Deeper objects are the caller's data (a tool's parameters may
    well be named `Input`); two spellings side by side are refused at every depth."""
    if not policed or not isinstance(document, dict):
        return
    for name in document:
        if not _plainly_spelled(name) and _field_key(name) in policed:
            raise RepeatedField(
                f"The request body names the field {name[:100]!r}, which some providers read "
                "as a field the proxy checks under its usual spelling; spell it as the API "
                "documents it."
            )


# The field key of each member name seen lately: a body's names are mostly the same few
# (`model`, `messages`, `role`, `content`), each worth a dict lookup rather than a
# replace and a lower. Bounded, so a body of made-up names cannot grow it.
_FIELD_KEYS: dict[str, str] = {}
_FIELD_KEYS_MAX = 4096


def _one_value_per_name(
    policed: frozenset[str],
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """The object hook of `strict_json`: every JSON object of the body goes through it."""
    known = _FIELD_KEYS

    def one_value_per_name(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) != len(pairs):
            seen: set[str] = set()
            for name, _ in pairs:
                if name in seen:
                    raise RepeatedField(
                        f"The request body names the field {name[:100]!r} more than once; "
                        "send it once."
                    )
                seen.add(name)
        if policed:
            spellings: dict[str, str] = {}
            for name in document:
                key = known.get(name)
                if key is None:
                    key = _field_key(name)
                    if len(known) < _FIELD_KEYS_MAX:
                        known[name] = key
                if key in policed:
                    if key in spellings:
                        raise RepeatedField(
                            f"The request body names the field {name[:100]!r} twice in "
                            f"different spellings ({spellings[key][:100]!r}); send it once."
                        )
                    spellings[key] = name
        return document

    return one_value_per_name


def strict_json(body: bytes, policed: frozenset[str]) -> Any:
    """`json.loads` for a body the proxy decides on. A field named twice is refused, and so
    is a policed field in two spellings: the proxy would check one value while a provider
    or gateway that reads the other runs a model or a token cap nobody checked."""
    document = json.loads(body, object_pairs_hook=_one_value_per_name(policed))
    _check_spellings(document, policed)
    return document


# One strict decoder per set of policed fields, built once: `json.loads` with a hook builds
# a decoder (and its C scanner) on every call. Used on the event loop only (`_parse` with
# `shared`): a body parsed on a worker thread gets a decoder of its own.
_STRICT_DECODERS: dict[frozenset[str], json.JSONDecoder] = {}


def _strict_decoder(policed: frozenset[str]) -> json.JSONDecoder:
    decoder = _STRICT_DECODERS.get(policed)
    if decoder is None:
        decoder = json.JSONDecoder(object_pairs_hook=_one_value_per_name(policed))
        _STRICT_DECODERS[policed] = decoder
    return decoder


def _one_model(document: Any) -> Any:
    """A body the rules read names one model. OpenRouter and gateways like it also read
    `models`, a list of fallbacks tried in turn: listing others beside `model` would have
    one model checked (scopes, ALLOWED_MODELS, prices) and another run. OpenRouter also runs
    a preset stored in the account, named as a model (`@preset/x`, `gpt-4o-mini@preset/x`)
    or beside one (`preset`): its models, system prompt and tools, which no rule reads."""
    if not isinstance(document, dict):
        return document
    model = document.get("model")
    if "preset" in document or (isinstance(model, str) and "@preset" in model.casefold()):
        raise RepeatedField(
            "The request body names an OpenRouter preset, whose stored settings (its models "
            "and tools) the proxy cannot check; name the model and its settings in the body."
        )
    if "models" in document:
        listed = document["models"]
        model = document.get("model")
        if not isinstance(listed, list) or any(entry != model for entry in listed):
            raise RepeatedField(
                "The request body lists other models in 'models' beside 'model'; send one "
                "model per request (the proxy's MODEL_FALLBACKS tries others for you)."
            )
    return document


def _parse(body: bytes, strict: bool, wire: Wire, shared: bool = False) -> Any:
    try:
        if not strict:
            # The plain C decoder when no rule reads the body: a validity check only.
            return json.loads(body)
        if not shared:
            return _one_model(strict_json(body, wire.policed_fields))
        # What `json.loads` does with bytes, with the decoder built once.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        document = _strict_decoder(wire.policed_fields).decode(text)
        _check_spellings(document, wire.policed_fields)
        return _one_model(document)
    except RecursionError:
        raise BadRequest("The request body's JSON is nested too deeply.") from None
    except RepeatedField:
        raise
    except ValueError as exc:
        # The decoder's message gives line and column, never the body itself.
        reason = str(exc).split(":", 1)[0]
        raise BadRequest(f"The request body is not valid JSON ({reason}).") from None


class ProxyRequest:
    """One caller request as the stages see it: where it goes, its body, and what was decided.

    State, not a value: compared by identity. A plain class with slots rather than a
    dataclass, whose generated methods CPython compiles at every cold start."""

    __slots__ = (
        "_document",
        "body",
        "caller",
        "content_encoding",
        "content_length",
        "content_type",
        "counted_as",
        "credential",
        "headers",
        "log",
        "max_json_bytes",
        "method",
        "origin",
        "path",
        "provider",
        "query",
        "remainder",
        "route",
        "scope",
        "strict",
        "target",
        "upload_leg",
    )

    def __init__(
        self,
        *,
        scope: Scope,
        method: str,
        provider: Provider,
        remainder: str,
        path: str,
        route: Route,
        query: bytes,
        credential: bytes | None,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        content_type: bytes,
        content_encoding: bytes,
        origin: bytes | None,
        log: RequestLog | None,
    ) -> None:
        self.scope = scope
        self.method = method
        self.provider = provider
        # The path after the provider's prefix, as sent; `path` is it normalised for
        # matching.
        self.remainder = remainder
        self.path = path
        self.route = route
        # The raw query with the credential parameter taken out.
        self.query = query
        self.credential = credential
        self.headers = headers
        self.content_length = content_length
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.origin = origin
        self.log = log
        self.body = b""
        self.caller: Caller | None = None
        # The identity limits, budgets and usage are counted under
        # (core/access/identify.py).
        self.counted_as = ""
        # Parse with the repeated-field checks: on when a rule decides on the body.
        self.strict = True
        # A resumable upload's bytes (core/proxy/uploads.py): raw, whatever Content-Type
        # says.
        self.upload_leg = False
        # Which of the provider's upstream targets served it (pinned beforehand for an
        # upload leg: its session lives on the target that started it).
        self.target: int | None = None
        # MAX_JSON_BYTES, once the body is read: it bounds a body parsed as JSON for its
        # shape (`{...}` labelled text/plain) as it bounds one labelled JSON. 0: no bound.
        self.max_json_bytes = 0
        self._document: Any = _NOT_PARSED

    @property
    def wire(self) -> Wire:
        return self.provider.wire

    @property
    def is_json(self) -> bool:
        # The SDKs label an upload's raw bytes application/json.
        # `find`, not `in`: see core/proxy/scrub.py's StreamScrubber.__call__.
        return self.content_type.find(b"json") >= 0 and not self.upload_leg

    @property
    def encoded(self) -> bool:
        """The body is compressed: the proxy cannot read it."""
        return self.content_encoding not in (b"", b"identity")

    async def read_body(self, receive: Receive, limit: int) -> None:
        declared = self.content_length
        if declared is not None and declared > limit:
            raise PayloadTooLarge(
                f"The request body is larger than the proxy's limit of {limit} bytes."
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("The client disconnected while sending the body.")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"The request body is larger than the proxy's limit of {limit} bytes."
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def document(self) -> Any:
        """The JSON body, parsed once; None when there is no JSON body to read."""
        if self._document is _NOT_PARSED:
            body = self.body
            if not body or self.encoded or self.upload_leg:
                self._document = None
            elif not self.is_json and body.lstrip()[:1] not in (b"{", b"["):
                self._document = None  # an upload or form: not JSON, nothing to read
            elif not self.is_json and 0 < self.max_json_bytes < len(body):
                # A label must not lift the bound off what is parsed all the same.
                raise PayloadTooLarge(
                    "The request body is JSON larger than the proxy's limit of "
                    f"{self.max_json_bytes} bytes (MAX_JSON_BYTES)."
                )
            elif len(body) > _PARSE_OFF_LOOP:
                self._document = await asyncio.to_thread(_parse, body, self.strict, self.wire)
            else:
                self._document = _parse(body, self.strict, self.wire, shared=True)
        return self._document

    def _path_marker(self) -> tuple[str, int]:
        """The decoded path and where the provider's model marker (Gemini `/models/`, Azure
        `/deployments/`) begins in it, or -1. Read where the route was read, as the upstream
        reads it: decoded, `;` parameters cut, the marker in any case (`/%64eployments/`,
        `/Deployments/` and `/deployments;v=1/` all name Azure's deployment, `%3A` is a
        method's `:`). Read off the raw path, such a spelling fell through to the body's
        `model`, which Azure and Gemini ignore beside the path's."""
        path = decoded_path(self.remainder)
        marker = self.provider.model_in_path
        return path, path.lower().find(marker) if marker else -1

    def names_model_in_path(self) -> bool:
        """Whether the path names the model (model() then reads it there)."""
        return bool(self.provider.model_in_path) and self._path_marker()[1] >= 0

    async def model(self) -> str | None:
        """The model asked for: the path's model segment (Gemini `/models/{model}:...`,
        Azure `/deployments/{name}/...`) or the JSON body's `model`."""
        marker = self.provider.model_in_path
        if marker:
            path, at = self._path_marker()
            if at >= 0:
                segment = path[at + len(marker) :]
                return segment.split("/", 1)[0].split(":", 1)[0] or None
            if ":" in path:
                # A method called on another resource (Gemini `tunedModels/x:generateContent`):
                # name it with its collection, so a scope written for models never matches it.
                resource = path.split(":", 1)[0].strip("/").split("/")
                if len(resource) >= 2:
                    return "/".join(resource[-2:])
        if self.route in MODEL_IN_FORM:
            # Transcriptions, image edits: the model is a form field. Loaded on first use
            # (its patterns are compiled at import), as few deployments see these routes.
            from core.form_fields import form_field, is_form

            if is_form(self.content_type):
                # The header as sent: a boundary's case is its own.
                sent = [value for name, value in self.headers if name == b"content-type"]
                return form_field(self.body, sent, "model") or None
        try:
            model = self.wire.model_in(self.route, await self.document())
        except AmbiguousModel as exc:
            raise RepeatedField(
                f"The request body names its model ambiguously ({str(exc)[:200]}); name it once."
            ) from None
        if not isinstance(model, str):
            return None
        if not well_formed(model):
            raise NotUnicode(_NOT_UNICODE.format(what="model"))
        # Gemini's OpenAI-compatible endpoint accepts `models/gemini-...` as well.
        return model.removeprefix("models/")

    async def other_models(self) -> list[str]:
        """Models a request names besides its own, each run (and billed) with it: an OpenAI
        realtime session's input transcription model, in a mint's body or a session's
        settings. A name that is not text is refused: no rule could check it."""
        if self.route.kind != "minting" and self.route.name != "realtime":
            return []
        named = transcription_models(await self.document())
        if any(not isinstance(name, str) for name in named):
            raise BadRequest("A transcription model must be named as text.")
        if not all(well_formed(name) for name in named):
            raise NotUnicode(_NOT_UNICODE.format(what="transcription model"))
        return named

    def use_document(self, document: Any) -> None:
        """The parsed body of a request whose content arrives another way: a WebSocket
        session's model from its URL or its first message (core/realtime/session.py)."""
        self._document = document

    async def is_stream(self) -> bool:
        return self.wire.is_stream(self.route, self.path, self.query, await self.document())


def _route_of(wire: Wire, method: str, remainder: str) -> tuple[str, Route]:
    check_path(remainder)
    path = route_path(remainder)
    return path, wire.route(method, path)


# The checked path as routes read it, and its route: the same for every request to the
# same path, so worked out once per path (BadRequest is raised, never kept). Bounded in
# entries and in what each may hold, as callers choose the paths; `Route` is frozen, so
# sharing one is safe.
_route_of_known = functools.lru_cache(maxsize=1024)(_route_of)
_CACHED_PATH_CHARS = 256


def _routed(wire: Wire, method: str, remainder: str) -> tuple[str, Route]:
    if len(remainder) > _CACHED_PATH_CHARS:
        return _route_of(wire, method, remainder)
    return _route_of_known(wire, method, remainder)


def build_request(
    scope: Scope,
    provider: Provider,
    remainder: str,
    log: RequestLog | None,
    browser_key: bytes | None = None,
) -> ProxyRequest:
    """The request object for a routed call; BadRequest for what no stage should see.
    `browser_key`: a WebSocket's credential subprotocol (core/realtime/wire.py), the
    credential when no header or `key=` carries one."""
    method = scope["method"]
    if method not in ALLOWED_METHODS:
        raise MethodNotAllowed(f"Method {method} is not allowed on this proxy.")
    path, route = _routed(provider.wire, method, remainder)
    if route is MODERATION and not provider.free_moderation:
        route = UNREADABLE
    elif route in CONVERSATIONS and provider.conversations_store_only:
        route = UNREADABLE  # OpenAI's Conversations API stores items, generates nothing
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    content_length: int | None = None
    content_type = b""
    content_encoding = b""
    origin: bytes | None = None
    for name, value in headers:
        if _LINE_BREAK_OR_NUL(value) is not None:
            raise BadRequest("A request header contains a line break or NUL byte.")
        if name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                raise BadRequest("The Content-Length header is not a number.") from None
        # A repeated Content-Type or Content-Encoding is read as one comma-joined value,
        # the form a Function URL, an HTTP API and Mangum's REST API events hand over: a
        # server must not read only the last copy (`application/json` then `text/plain`
        # escaped MAX_JSON_BYTES; `gzip` then `identity` passed a body the upstream
        # inflates as plain) where Lambda reads them all.
        elif name == b"content-type":
            content_type = content_type + b"," + value.lower() if content_type else value.lower()
        elif name == b"content-encoding":
            value = value.strip().lower()
            content_encoding = content_encoding + b"," + value if content_encoding else value
        elif name == b"origin":
            origin = value
        elif name == b"upgrade" and value.strip().lower() == b"websocket":
            raise WebSocketUnsupported(WEBSOCKET_UNSUPPORTED)
        elif name in _METHOD_OVERRIDES:
            raise BadRequest(
                f"The {name.decode()} header is not accepted; send the request with its method."
            )
    query_string: bytes = scope.get("query_string", b"")
    if b"#" in query_string:
        # As in the path (check_path): the proxy would read the query past a `#` where the
        # upstream URL ends it (`?alt=sse#&model=...`, `?x=1#&deployment=...`).
        raise BadRequest(
            "The query holds a '#': a fragment is never part of a request; escape it as %23."
        )
    key_params, query = split_key_params(query_string)
    if len(key_params) > 1:
        # As a slot header sent twice (core/headers.py find_credential): which copy is the
        # credential must not depend on the reader (a front end's rate limit, a WAF, a log
        # that keeps the first; the proxy took the last).
        raise Unauthorized("The key parameter is sent twice; send it once.")
    key_param = key_params[0] if key_params else None
    overriding = overriding_parameter(query)
    if overriding is not None:
        raise BadRequest(
            f"The parameter {overriding!r} would have the provider read this request "
            "otherwise than the proxy does; send the request without it."
        )
    credential = find_credential(headers, key_param)
    if credential is None:
        credential = browser_key
    if credential is not None and credential_in_url(credential, remainder, query):
        if log is not None:
            # The access log's line and the telemetry that reads it must not carry it either.
            shown = log.path.replace(credential.decode("latin-1"), "[redacted]")
            # Escaped there (the path is decoded once): none of it is shown.
            log.path = "[redacted]" if credential_in_url(credential, shown, b"") else shown
        raise BadRequest(
            "The request's path or query holds the proxy credential: send it only where "
            "your SDK puts its key (a header, or Gemini's key= parameter)."
        )
    return ProxyRequest(
        scope=scope,
        method=method,
        provider=provider,
        remainder=remainder,
        path=path,
        route=route,
        query=query,
        credential=credential,
        headers=headers,
        content_length=content_length,
        content_type=content_type,
        content_encoding=content_encoding,
        origin=origin,
        log=log,
    )
