"""What the proxy knows of each API protocol's messages, kept beside the provider records.

A provider record names its protocol (`Provider.wire`); nothing else in the proxy branches
on provider names. A protocol says, for a method and path:

- what kind of route it is: `metered` (generates or embeds, and reports usage the meter can
  read), `free` (reads, counting tokens, listing models: spends nothing), `minting` (issues
  a short-lived provider key used outside the proxy: refused unless ALLOW_EPHEMERAL_KEYS,
  charged a fixed worst case per key, core/realtime/minting.py), or `unreadable` (may spend,
  but reports no usage the meter understands: refused while a limit or budget is on, since
  a cap that cannot count is no cap);
- whether the route generates text (the request policy's caps apply) and whether the
  request asks for a stream;
- where usage sits in whole and streamed replies, and how to read it into one shape;
- how a stream is asked for usage when the caller did not (OpenAI's include_usage);
- which routes are account routes: they read or change objects stored in the provider
  account (files, stored responses, batches...), which every caller of the proxy shares
  (`AccountRoutes`, one table per protocol; ACCOUNT_ROUTES and token scopes refuse them).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote_to_bytes

from core.escapes import decoded

RouteKind = Literal["free", "metered", "minting", "unreadable"]


class Route(NamedTuple):
    """What kind of request a path is (metered, free, unreadable, minting) and its short name."""

    kind: RouteKind
    # A short name for logs and the policy: "chat", "responses", "messages", "generate"...
    name: str
    generates: bool = False


FREE = Route("free", "read")
# Free where the provider's record says so (`free_moderation`: OpenAI), unreadable elsewhere
# (Mistral bills its moderation, and other vendors may): core/request.py decides.
MODERATION = Route("free", "moderations")
# Audio transcriptions and translations: a multipart form that names its model in a field
# (read by core/form_fields.py), a reply the meter cannot read. Their text is bounded by
# the audio sent, not by an output cap.
FORM_WITH_MODEL = Route("unreadable", "form")
UNREADABLE = Route("unreadable", "other")
# Batches generate text later, outside any reply the meter or the policy could read.
_BATCH = Route("unreadable", "batch", generates=True)
# Routes that generate text in a shape the policy does not read (an Assistants run, with
# the assistant's model and its own cap; an eval's run; Ollama's native chat, capped by
# num_predict; Anthropic's legacy completions; Gemini's grounded answers; an
# OpenAI-compatible vendor's Anthropic-compatible /v1/messages): refused while
# MAX_TOKENS_CAP or MAX_MESSAGES is set, as a batch is, rather than read as routes that
# generate nothing.
_GENERATES_UNREAD = Route("unreadable", "generates-unread", generates=True)
# Images and video: written by a model and billed by what it writes (gpt-image-1's image
# tokens, `n` images of them; Sora's seconds), which the prompt does not bound and no field
# MAX_TOKENS_CAP reads. Refused while it is set; they have no conversation for MAX_MESSAGES
# to count. (Speech, like a transcription, is bounded by what is sent: the text to read.)
# MEDIA_FORM names its model in a form field (image edits and variations, video creation)
# or in a JSON body.
MEDIA = Route("unreadable", "media", generates=True)
MEDIA_FORM = Route("unreadable", "media-form", generates=True)
WRITES_MEDIA = frozenset({MEDIA, MEDIA_FORM})
MODEL_IN_FORM = frozenset({FORM_WITH_MODEL, MEDIA_FORM})
# A POST under /conversations: OpenAI's Conversations API stores items and generates
# nothing, Mistral's (start, append, restart) runs a model or an agent, with its cap in
# `completion_args` and its turns in `inputs`, which the policy reads. Read as the latter
# unless the provider's record says its host is OpenAI's (`conversations_store_only`):
# core/request.py decides, as for moderation. Starting one names its model (or an agent,
# whose model and settings the proxy cannot see); appending to one or restarting it runs
# the model stored with it at the provider, which the body does not name. The meter does
# not read their replies (kind "unreadable": refused under a token limit or a budget).
CONVERSATION = Route("unreadable", "conversation", generates=True)
CONVERSATION_TURN = Route("unreadable", "conversation-turn", generates=True)
CONVERSATIONS = frozenset({CONVERSATION, CONVERSATION_TURN})
# Ephemeral keys for realtime sessions the caller then opens with the provider directly.
EPHEMERAL_KEY = Route("minting", "ephemeral-key")
# A provider-side realtime session made over HTTP (WebRTC's SDP offer, a SIP call's accept):
# its media then flows between the caller and the provider, unmetered and past every rule,
# so creating one is minting too. Refused even while minting is on (core/realtime/minting.py).
REALTIME_CALL = Route("minting", "realtime-call")


class Usage(NamedTuple):
    """Tokens a reply reports, in one shape for every protocol. `input_tokens` counts every
    prompt token, cached ones and cache writes included; `cached_input_tokens` is the
    cheaper part of it, and the cache writes (Anthropic's, five-minute and one-hour) the
    dearer parts."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    # The audio parts of the input and the output, billed at audio rates.
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0

    def plus(self, other: Usage) -> Usage:
        """Two calls' or turns' usage together, every part summed."""
        return Usage(*(a + b for a, b in zip(self, other, strict=True)))

    def most(self, other: Usage) -> Usage:
        """The larger of each part (a turn's growing figures)."""
        return Usage(*(max(a, b) for a, b in zip(self, other, strict=True)))

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class UnreadableUsage(ValueError):
    """A token count in a reply's usage that is no whole number of tokens (negative,
    fractional, text that is no number, a list): the usage is unread, and the reply is
    charged its reservation (fail closed), never the count taken as 0."""


def usage_count(value: Any) -> int:
    """One token count of a reply's usage. Absent or null is 0; a count written as a
    lenient upstream writes it (`70.0`, `"70"`: pydantic's lax mode, protobuf JSON's int64)
    is that count. Any other value raises UnreadableUsage: read as 0, a reply reporting
    `"completion_tokens": 70.5` or `-1` was metered as having written nothing."""
    if value is None:
        return 0
    if type(value) is int and value >= 0:
        return value
    count = lenient_count(value)
    if count is None or count < 0:
        raise UnreadableUsage(f"{str(value)[:40]!r} is not a count of tokens")
    return count


def _detail(details: Any, name: str) -> int:
    """One count from an OpenAI `*_tokens_details` object (audio_tokens, cached_tokens)."""
    return usage_count(details.get(name)) if isinstance(details, dict) else 0


def _openai_usage(usage: dict[str, Any], input_name: str, output_name: str) -> Usage:
    """An OpenAI usage object under either naming (chat's prompt/completion, the Responses
    API's input/output), with the cached and audio counts of its `*_details`.

    OpenAI counts reasoning inside the output tokens; xAI (and gateways that translate
    Gemini's thoughts) report it beside them, in `total_tokens` only: the output is then
    the total less the input, or the reasoning would be free."""
    details = usage.get(input_name + "_details")
    input_tokens = usage_count(usage.get(input_name))
    return Usage(
        input_tokens,
        max(
            usage_count(usage.get(output_name)),
            usage_count(usage.get("total_tokens")) - input_tokens,
        ),
        _detail(details, "cached_tokens"),
        audio_input_tokens=_detail(details, "audio_tokens"),
        audio_output_tokens=_detail(usage.get(output_name + "_details"), "audio_tokens"),
    )


def modality_tokens(details: Any, modality: str) -> int:
    """The tokens of one modality in a Gemini `*TokensDetails` list ({modality, tokenCount})."""
    if not isinstance(details, list):
        return 0
    return sum(
        usage_count(entry.get("tokenCount", entry.get("token_count")))
        for entry in details
        if isinstance(entry, dict) and entry.get("modality") == modality
    )


def decoded_path(remainder: str) -> str:
    """The path as an upstream would read it, case kept: decoded (every escape, however
    deep: core/escapes.py), repeated and trailing
    slashes dropped, path parameters (`;x`, which servlet-style routers ignore) cut from
    each segment."""
    # Every escape decoded (core/escapes.py): a router may decode once, twice or more.
    parts = [part.partition(";")[0] for part in decoded(remainder).split("/")]
    return "/" + "/".join(part for part in parts if part)


def route_path(remainder: str) -> str:
    """`decoded_path` in lower case, for matching routes (ASP.NET and many routers ignore
    case): `/v1/Chat//completions;x/` is still chat."""
    return decoded_path(remainder).lower()


def _squashed(path: str) -> str:
    # `client_secrets`, `clientSecrets` and `clientsecrets` are one route to a lenient router
    # (gRPC transcoding takes both spellings): routes that mint are matched without `_`.
    return path.replace("_", "")


# Realtime routes over HTTP, squashed: OpenAI's (and Azure's GA `/openai/v1/...`) and
# Azure's preview `realtimeapi/sessions`, which mint a client secret from a JSON body; and
# OpenAI's ChatKit sessions, whose client secret runs an agent workflow from the browser
# with the provider directly (past every rule here, as a realtime key does).
_KEY_MINTING = (
    "/realtime/clientsecrets",
    "/realtime/sessions",
    "/realtime/transcriptionsessions",
    "/chatkit/sessions",
)
_AZURE_KEY_MINTING = ("/realtimeapi/sessions",)


def _realtime_route(path: str) -> Route | None:
    """A POST under a realtime segment creates or drives a provider-side session: a key
    mint, or a WebRTC / SIP call (`/realtime`, `/realtime/calls`, `/realtimertc`, ...)."""
    squashed = _squashed(path)
    if _ends(squashed, *_KEY_MINTING, *_AZURE_KEY_MINTING):
        return EPHEMERAL_KEY
    if any(segment.startswith("realtime") for segment in squashed.split("/")):
        return REALTIME_CALL
    return None


# ---- account routes ---------------------------------------------------------------------
# Every caller of the proxy uses the key owner's provider account, so an object one caller
# stores there (a file, a stored response or chat completion, a batch, a vector store) is
# every caller's to list, read, change or delete. Such routes are "account routes".
# ACCOUNT_ROUTES=refuse refuses them to every caller, and a token limited to some models or
# providers is refused them always (core/access/account_routes.py).
#
# A table row is (methods, pattern). A pattern is the path after any prefix (`/v1`,
# `/openai/v1`, `/v1beta`, an Azure or gateway base path), as route_path reads it: decoded,
# lower case, `;x` and repeated or trailing slashes gone. `*` is one segment (an object's
# id, with any `:method` on it); `**`, last, is any further segments or none. So
# `/files/*/**` is a stored file and everything under it, `/files` the list alone. A POST
# to a collection itself (`POST /files`, `POST /batches`, Gemini's upload start) makes a new
# object and reads nobody's: no row holds it. A request the protocol reads as generating
# (`POST /chat/completions`, an Assistants run, a tuned model's generateContent) is never
# an account route, whatever store it names; model lists and lookups are not either.

READS = "GET HEAD"
ANY = "GET HEAD POST PUT PATCH DELETE"


class AccountRoutes:
    """One protocol's account routes: rows of (methods, pattern), matched from any segment
    of the path (after whatever prefix the route or the upstream's base path puts first)."""

    def __init__(self, *rows: tuple[str, str]) -> None:
        self.rows = rows
        # Compiled on the first match: some 65 expressions cost about 4 ms of every cold
        # start, and most deployments never ask (only a scoped token, a signed-in user or
        # ACCOUNT_ROUTES=refuse does).
        self._rows: dict[str, list[tuple[str, re.Pattern[str]]]] | None = None

    def _compiled(self) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
        by_method: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        for methods, pattern in self.rows:
            collection = "/".join(part for part in pattern.strip("/").split("/") if "*" not in part)
            expression = re.compile(_pattern_expression(pattern) + "$")
            for method in methods.split():
                by_method.setdefault(method, []).append((collection, expression))
        self._rows = by_method
        return by_method

    def match(self, method: str, path: str) -> str | None:
        """The account collection (`files`, `chat/completions`) that `method` on `path`
        reaches, or None. `path` is route_path's."""
        rows = self._rows if self._rows is not None else self._compiled()
        for collection, expression in rows.get(method, ()):
            if expression.search(path) is not None:
                return collection
        return None


# A write to one of OpenRouter's presets (`/api/v1/presets/{slug}/chat/completions`), in
# route_path's spelling.
_PRESET_WRITE = re.compile(r"(?:^|/)presets/[^/]+(?:/|$)")


def _pattern_expression(pattern: str) -> str:
    """A row's pattern as an expression matched from a segment's start: `/files/*/**` is
    `/files/[^/]+(?:/[^/]+)*`."""
    parts = []
    for segment in pattern.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:/[^/]+)*")
        elif segment == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + re.escape(segment))
    return "".join(parts)


class Wire:
    """One API protocol. Subclasses are data plus a few small readers."""

    name = "openai"
    # JSON keys under which usage sits, in replies and stream events.
    usage_keys: tuple[bytes, ...] = (b'"usage"',)
    # Field names whose spellings a lenient upstream may mix up (Go's encoding/json matches
    # keys case-insensitively; protobuf JSON takes snake_case and camelCase): a body naming
    # one of these twice in any spelling is refused (core/request.py).
    policed_fields: frozenset[str] = frozenset()
    # Its model list (GET .../models): the array of entries, and the field naming each
    # (core/access/model_lists.py holds both to the rules that refuse a model).
    model_list_field = "data"
    model_name_field = "id"
    # A model lookup names one path segment (Gemini's `/models/{name}`), rather than the
    # rest of the path (ids with `/`: `meta-llama/Llama-3-8B`, `accounts/x/models/y`).
    model_name_is_segment = False
    # How its list pages: "" (one page), "token" (Gemini: `pageToken` asked for, the next
    # one answered in `nextPageToken`), "cursor" (Anthropic: `after_id` / `before_id` asked
    # for, `has_more`, `first_id` and `last_id` answered).
    model_list_paging = ""
    # Routes that read or change objects stored in the provider account (see AccountRoutes).
    account_routes = AccountRoutes()

    def route(self, method: str, path: str) -> Route:
        raise NotImplementedError

    def account_route(self, method: str, path: str) -> str | None:
        """The account collection a request reaches (`files`, `responses`), or None. `path`
        is route_path's. A write the protocol reads as generating (an Assistants run on a
        stored thread, a tuned model's generateContent) is a generation route, not one."""
        collection = self.account_routes.match(method, path)
        if collection is None or method in ("GET", "HEAD", "DELETE"):
            return collection
        return None if self.route(method, path).generates else collection

    def is_stream(self, route: Route, path: str, query: bytes, document: Any) -> bool:
        return isinstance(document, dict) and document.get("stream") is True

    def model_in(self, route: Route, document: Any) -> Any:
        """Where a JSON body names its model: `model`, or the session's for a minting route."""
        if not isinstance(document, dict):
            return None
        if route.kind == "minting":
            return _minted_model(document)
        if route is CONVERSATION_TURN or (
            route is CONVERSATION and conversation_agent(document) is not None
        ):
            # The stored conversation's model, or the agent's, runs whatever `model` says:
            # none the proxy can read (ALLOWED_MODELS and a model-scoped token refuse it).
            return None
        return document.get("model")

    def usage_in(self, event: Any) -> dict[str, Any] | None:
        """The usage object inside one parsed reply or stream event, if any."""
        if not isinstance(event, dict):
            return None
        usage = event.get("usage")
        return usage if isinstance(usage, dict) else None

    def read_usage(self, usage: dict[str, Any], into: Usage) -> Usage | None:
        """`into` updated with what `usage` reports; None if it reports no tokens (whisper's
        `{"type":"duration"}`): such a reply counts as unread, charged its reservation."""
        raise NotImplementedError

    def usage_final(self, event: dict[str, Any]) -> bool:
        """Whether the usage in this stream event counts the whole reply, or only what came
        before more is written (Anthropic's message_start): a stream that ends after such
        an event alone is charged as cut short, whatever it wrote after it."""
        return True

    def output_caps(
        self, document: dict[str, Any], route: Route | None = None
    ) -> list[tuple[str, Any]]:
        """(field, value) for every field that caps the output tokens of one answer: the
        API's own names, then OTHER_OUTPUT_CAPS where the body has them. A Mistral
        conversation (`route` in CONVERSATIONS) reads `completion_args` alone: no other
        field caps it."""
        if route in CONVERSATIONS:
            return _conversation_caps(document)
        return [(name, document[name]) for name in _OUTPUT_CAP_FIELDS if name in document]

    def answers(self, document: dict[str, Any]) -> int:
        """How many answers one request generates (OpenAI `n` and `best_of`, Gemini
        `candidateCount`); UnreadableCount when one is not a whole number."""
        return 1

    def temperature(self, document: dict[str, Any]) -> Any:
        """The sampling temperature asked for, as sent (None when absent)."""
        return document.get("temperature")

    def priced_tools(self, route: Route, document: dict[str, Any]) -> list[str]:
        """Tools the request turns on that the provider bills apart from the tokens a reply's
        usage reports (a web search per call, a code container per session), or tools the
        proxy cannot see (a stored prompt's, a cache's): a dollar budget cannot count them.
        Function tools, which the caller runs, cost tokens only."""
        return []

    def dearer_rate(self, document: dict[str, Any]) -> str | None:
        """A field that asks the provider to bill every token above its list price (OpenAI's
        `service_tier: "priority"`), or None: the price table knows list prices only."""
        return None

    def input_elsewhere(self, document: dict[str, Any], body: bytes | None = None) -> str | None:
        """The first field by which the request names input it does not carry (a previous
        response, a stored conversation, a file, an image or a video by URL, a hosted tool
        that reads into the prompt), or None: its prompt is then bounded by the model's
        context window only, never by the body's size. `body`, the bytes `document` was
        parsed from, spares the walk of a document that cannot name any."""
        return _names_input_elsewhere(document, self.fetching_tool, body)

    def fetching_tool(self, tool: Any) -> bool:
        """Whether one `tools` entry reads more input into the same request: any tool the
        provider runs itself (a web or file search, a URL fetch, a remote MCP server, code
        run on the provider's side), whose results the model reads as input. Only the tools
        the caller runs (functions, computer use) are not; a kind not known is taken for
        one the provider runs."""
        return False

    def conversation_length(self, route: Route, document: dict[str, Any]) -> tuple[str, int]:
        if route in CONVERSATIONS:
            # Mistral's `inputs`: one message as a string, or a list of entries.
            inputs = document.get("inputs")
            if isinstance(inputs, list):
                return "inputs", len(inputs)
            return "inputs", 1 if inputs is not None else 0
        for name in ("messages", "contents", "input", "prompt"):
            value = document.get(name)
            if isinstance(value, list):
                return name, len(value)
        return "messages", 0

    def stream_needs_usage_request(self, route: Route, document: Any) -> bool:
        """True when a stream reports usage only if asked and this request did not ask."""
        return False

    # How a stream's last event ends, for protocols whose SDKs stop reading at it: the
    # proxy settles before relaying that event (core/proxy/stream_end.py). Empty: the
    # caller reads to the body's end, which the proxy sends after settling anyway.
    last_event_tail = b""

    def is_last_event(self, name: bytes, data: bytes) -> bool:
        """Whether one whole event (its `event:` name and joined `data:`) ends the stream."""
        return False


# Names other servers of the same API read for the output limit, in place of the API's own
# or ahead of it: llama.cpp's server (its OpenAI- and Anthropic-compatible routes) reads
# `n_predict` before `max_tokens`, and -1 there is no limit at all. Held to the cap where a
# body has them, but never taken for the cap a request must set: an upstream that does not
# read them writes to the model's own limit.
OTHER_OUTPUT_CAPS = ("n_predict",)
_OUTPUT_CAP_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    *OTHER_OUTPUT_CAPS,
)


class UnreadableCount(ValueError):
    """A count of answers (n, best_of, candidateCount) in a form the proxy does not read as
    a whole number: refused where a rule depends on it, since the upstream may read it."""


# Past this many digits a count is absurd (MAX_ANSWERS refuses it); int() of thousands of
# digits is slow, and Python refuses it past 4300.
_COUNT_DIGITS = 18


def lenient_count(value: Any) -> int | None:
    """A whole number as the most lenient upstream reads it, None when none would: protobuf
    JSON (Gemini) reads an integer from a string (`"8"`, `"8e0"`), pydantic's lax mode
    (vLLM, most Python servers) from a string or an integral float (`8.0`, `" 8 "`). A
    rule that counts only JSON integers would count such an `n` as one answer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip().removeprefix("+")
        if len(digits) > _COUNT_DIGITS and digits.isascii() and digits.isdigit():
            return 10**_COUNT_DIGITS  # absurd, and refused as such: not parsed
        try:
            value = float(digits)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _answers(value: Any) -> int:
    """A count of answers as the upstream reads it (lenient_count). Counting `"8"` as one
    answer let `candidateCount: "8"` reserve and pass MAX_TOKENS_CAP as one answer while
    eight were written and billed; a count no upstream reads as a number is refused."""
    if value is None or isinstance(value, bool):
        return 1
    count = lenient_count(value)
    if count is None:
        raise UnreadableCount(f"{str(value)[:40]!r} is not a whole number")
    return max(count, 1)  # zero or negative: refused by the upstream, one at most


# Where an OpenAI realtime session (a mint's body, a session.update's `session`, a realtime
# or transcription session's body) names its input transcription model, billed apart.
_TRANSCRIPTION_PATHS = (
    ("session", "audio", "input", "transcription", "model"),
    ("session", "input_audio_transcription", "model"),
    ("audio", "input", "transcription", "model"),
    ("input_audio_transcription", "model"),
)


def transcription_models(document: Any) -> list[Any]:
    """Every transcription model a realtime session's settings name (each may be run and
    billed beside the session's own model, so each is held to the same rules)."""
    found = []
    for path in _TRANSCRIPTION_PATHS:
        value = document
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if value is not None:
            found.append(value)
    return found


class AmbiguousModel(ValueError):
    """A minting body that names its session's model in two places or two spellings."""


def field_in(document: dict[str, Any], name: str) -> Any:
    """The value of `name` in any of its spellings (`bidi_generate_content_setup`,
    `bidiGenerateContentSetup`: protobuf JSON reads both); two spellings are ambiguous."""
    wanted = name.replace("_", "").casefold()
    found = [key for key in document if key.replace("_", "").casefold() == wanted]
    if len(found) > 1:
        raise AmbiguousModel(f"{found[0]!r} and {found[1]!r} are one field")
    return document[found[0]] if found else None


def _minted_model(document: dict[str, Any]) -> Any:
    # OpenAI client_secrets: session.model; OpenAI realtime/sessions: model; Gemini
    # auth_tokens: bidiGenerateContentSetup.model (the Live setup, also nested in `setup`).
    # Exactly one of these may name it: the provider reads one, the proxy checks the same.
    named = []
    session = field_in(document, "session")
    if isinstance(session, dict):
        named.append(field_in(session, "model"))
    setup = field_in(document, "bidigeneratecontentsetup")
    if isinstance(setup, dict):
        named.append(field_in(setup, "model"))
        nested = field_in(setup, "setup")
        if isinstance(nested, dict):
            named.append(field_in(nested, "model"))
    named.append(field_in(document, "model"))
    models = [model for model in named if model is not None]
    if len(models) > 1:
        raise AmbiguousModel("the session's model is named in more than one place")
    return models[0] if models else None


def minted_settings(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A mint's body and the session settings nested in it, where the key's session reads
    its tools (OpenAI client_secrets: `session`; Gemini auth_tokens:
    `bidiGenerateContentSetup`, also with its own `setup`), in every spelling `_minted_model`
    takes: the rules on tools read each, as they read an HTTP body or a session's frames."""
    found = [document]
    for name in ("session", "bidigeneratecontentsetup"):
        nested = field_in(document, name)
        if isinstance(nested, dict):
            found.append(nested)
            inner = field_in(nested, "setup")
            if isinstance(inner, dict):
                found.append(inner)
    return found


def token_setup_keeps(document: dict[str, Any], name: str) -> bool:
    """Whether a Gemini auth token's body fixes the setup field `name` of the Live sessions
    it opens. Google applies `bidiGenerateContentSetup` to such a session: whole when there
    is no `fieldMask`, else only the fields the mask lists (the rest come from the holder's
    own setup message). AmbiguousModel for a field named in two spellings."""
    setup = field_in(document, "bidiGenerateContentSetup")
    if not isinstance(setup, dict):
        return False
    mask = field_in(document, "fieldMask")
    if mask is None or mask == "":
        return True
    return isinstance(mask, str) and name in (path.strip() for path in mask.split(","))


def _tools(document: dict[str, Any]) -> list[Any]:
    """Every entry of `tools`, in any spelling of the name a lenient upstream reads."""
    found: list[Any] = []
    for name, value in document.items():
        if name.replace("_", "").lower() == "tools":
            found.extend(value if isinstance(value, list) else [value])
    return found


# OpenAI tool types billed as tokens only: functions and custom tools the caller runs,
# computer use and shell tools the caller's code carries out, remote MCP servers (their
# listings and results are input tokens). Everything else (web_search, file_search,
# code_interpreter, image_generation, a type added later) may bill per call.
# Models that search the web on every call, billed per call or per request apart from the
# tokens their usage reports: OpenAI's chat search models (`gpt-4o-mini-search-preview`,
# `gpt-5-search-api`: $10-25 per 1,000 calls), deep-research models (per search), and
# Perplexity's Sonar family (a request fee on each), by any route that names them
# (`openai/...`, `perplexity/sonar` on OpenRouter). A price entry matching the name
# (`gpt-4o-mini*`) would count their tokens and none of their searches, as OpenRouter's
# `:online` variant's. Matched as whole words of the name, in any case.
_SEARCHES_EVERY_CALL = re.compile(
    r"(?:^|[^a-z0-9])(?:search|deep-research)(?:[^a-z0-9]|$)|(?:^|/)sonar(?:[^a-z0-9]|$)"
)
_OPENAI_TOKEN_TOOLS = frozenset(
    {
        "function",
        "custom",
        "computer_use_preview",
        "computer",
        "local_shell",
        "shell",
        "apply_patch",
        "mcp",
    }
)
# OpenAI tool types the caller runs: the model reads no result it did not send back.
_OPENAI_CALLER_TOOLS = _OPENAI_TOKEN_TOOLS - {"mcp"}
# Anthropic: a custom tool has no type (or "custom"); these client tools (run by the
# caller) and web fetch cost tokens only. Web search bills per search, code execution per
# container hour, and a server tool added later may bill too.
_ANTHROPIC_TOKEN_TOOL_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_", "web_fetch_")
# Gemini: a Tool is an object whose member names the kind. Function declarations, code
# execution, URL context and computer use cost tokens only; Google Search and Maps
# grounding bill per grounded prompt, and a kind added later may bill too.
_GEMINI_TOKEN_TOOLS = frozenset(
    {"functiondeclarations", "codeexecution", "urlcontext", "computeruse"}
)
# The Anthropic and Gemini tools the caller runs (the rest run at the provider).
_ANTHROPIC_CALLER_TOOL_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_")
_GEMINI_CALLER_TOOLS = frozenset({"functiondeclarations", "computeruse"})


# Members that name input held by the provider or on the web, in the spellings the
# protocols (and protobuf JSON) take: OpenAI's file_id / file_url, Anthropic's file_id,
# Gemini's fileData.fileUri.
_REFERENCES = frozenset(
    {
        "file_id",
        "fileId",
        "file_url",
        "fileUrl",
        "file_uri",
        "fileUri",
    }
)
# Media by URL: OpenAI's image_url (a string in Responses, {"url": ...} in chat), and the
# same shape for audio and video on compatible vendors. A data: URL is carried inline.
_MEDIA_URLS = frozenset({"image_url", "imageUrl", "audio_url", "video_url", "videoUrl"})


def _by_url(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("url")
    return isinstance(value, str) and value.lstrip()[:5].lower() != "data:"


# Top-level members naming stored conversation state (Responses): a `conversation` in a
# message's metadata names nothing the model reads.
_STATE = ("previous_response_id", "conversation")


def _may_name_a_reference(body: bytes) -> bool:
    """Whether the walk below could find anything in the document `body` spells. Every
    member name it looks for holds "file" or "url" in some case ("fileUri", "imageUrl"),
    and so does every `type` it stops at, but for "item_reference". A JSON escape could
    spell any of them otherwise, and needs a backslash and a "u". JSON in UTF-16 or
    UTF-32 (which the parser takes) spells them with NUL bytes between, as UTF-8 JSON
    never holds a NUL."""
    if body.find(b"\\u") >= 0 or body.find(b"\x00") >= 0:
        return True
    lowered = body.lower()
    return (
        lowered.find(b"file") >= 0
        or lowered.find(b"url") >= 0
        or lowered.find(b"item_reference") >= 0
    )


def _names_input_elsewhere(document: Any, fetching_tool: Any, body: bytes | None) -> str | None:
    if not isinstance(document, dict):
        return None
    for name in _STATE:
        value = document.get(name)
        # A string, or a conversation given as {"id": ...}.
        if (isinstance(value, str) and value) or (
            isinstance(value, dict) and isinstance(value.get("id"), str)
        ):
            return name
    for tool in _tools(document):
        if fetching_tool(tool):
            return "tools"
    if body is not None and not _may_name_a_reference(body):
        return None
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            # Anthropic's {"type": "url", "url": ...} and {"type": "file", ...} sources.
            if kind in ("url", "file") and ("url" in node or "file_id" in node):
                return "source"
            if kind == "item_reference":
                return "item_reference"  # a Responses input item stored on the platform
            for name, value in node.items():
                if isinstance(value, dict | list):
                    stack.append(value)
                if name in _REFERENCES:
                    # A string; a JSON schema of a function's `file_id` parameter
                    # ({"type": "string"}) names nothing.
                    if isinstance(value, str) and value:
                        return name
                elif name in _MEDIA_URLS and _by_url(value):
                    return name
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _ends(path: str, *suffixes: str) -> bool:
    return any(path.endswith(suffix) for suffix in suffixes)


# OpenAI's generating routes, served beside another protocol's own (Anthropic's OpenAI SDK
# compatibility at /v1/chat/completions).
_OPENAI_GENERATING = ("/chat/completions", "/completions", "/responses")


def _cancels_response(path: str) -> bool:
    """`/responses/{id}/cancel`: one id segment, nothing else. The only free POST under
    /responses/ besides input_tokens; reading, listing and deleting are GET and DELETE."""
    _, found, tail = path.rpartition("/responses/")
    segments = tail.split("/")
    return bool(found) and len(segments) == 2 and segments[1] == "cancel"


def _runs_assistant(path: str) -> bool:
    """An Assistants run: `/threads/runs`, `/threads/{id}/runs`, and anything under a run
    (`.../runs/{id}/submit_tool_outputs` generates on)."""
    _, found, tail = path.partition("/threads/")
    return bool(found) and "runs" in tail.split("/")


def _runs_eval(path: str) -> bool:
    """An eval's run (`/evals/{id}/runs`): it samples the model under test over a data set,
    capped by `sampling_params`, billed as completions."""
    _, found, tail = path.partition("/evals/")
    return bool(found) and "runs" in tail.split("/")


def _after(path: str, segment: str) -> list[str] | None:
    """The segments after the last `segment` of the path, None when it has none."""
    segments = path.split("/")
    if segment not in segments:
        return None
    return segments[len(segments) - segments[::-1].index(segment) :]


def _batch_route(path: str) -> Route | None:
    """A batch: OpenAI's (Groq's, Together's, xAI's) `/batches`, xAI's
    `/batches/{id}/requests` (which adds requests to one), Mistral's `/batch/jobs`, an
    Anthropic-compatible `/messages/batches`. Cancelling one spends nothing."""
    tail = _after(path, "batches")
    if tail is not None:
        return None if tail[-1:] == ["cancel"] else _BATCH
    return _BATCH if _ends(path, "/batch/jobs") else None


def _media_route(path: str) -> Route | None:
    """Images and video (OpenAI's and the vendors' that copy its paths: xAI, Together,
    Zhipu's `/videos/generations`), and Fireworks' image workflows."""
    if _ends(path, "/images/edits", "/images/variations", "/videos"):
        return MEDIA_FORM
    segments = path.split("/")
    if (
        _ends(path, "/images/generations")
        or "videos" in segments[:-1]  # a remix, an extension, Zhipu's generations
        or "workflows" in segments
    ):
        return MEDIA
    return None


def _conversation_route(path: str) -> Route | None:
    """A POST under /conversations: adding items to one (OpenAI) generates nothing; the
    rest may generate: Mistral's start (`/conversations`), and its append
    (`/conversations/{id}`) and restart (`/conversations/{id}/restart`), whose model is
    the stored conversation's."""
    tail = _after(path, "conversations")
    if tail is None:
        return None
    if tail[1:2] == ["items"]:
        return UNREADABLE
    return CONVERSATION if not tail else CONVERSATION_TURN


def conversation_agent(document: dict[str, Any]) -> str | None:
    """The member by which a Mistral conversation names an agent (`agent_id`, in any
    spelling a lenient reader takes), or None: the agent's model and its completion
    settings are stored at the provider, out of the proxy's sight."""
    for name, value in document.items():
        if value is not None and name.replace("_", "").casefold() == "agentid":
            return name
    return None


# Where a Mistral conversation caps its output: `completion_args.max_tokens`. The cap must
# be spelt so; any other spelling of it there is held to the cap too.
CONVERSATION_CAP = "completion_args.max_tokens"


def _conversation_caps(document: dict[str, Any]) -> list[tuple[str, Any]]:
    args = document.get("completion_args")
    if not isinstance(args, dict):
        return []
    found = [(CONVERSATION_CAP, args["max_tokens"])] if "max_tokens" in args else []
    for name, value in args.items():
        if name != "max_tokens" and name.replace("_", "").casefold() == "maxtokens":
            found.append((f"completion_args.{name[:40]}", value))
    return found


def _cheapest_providers(name: str, value: Any) -> bool:
    """Whether one OpenRouter `provider` preference keeps a request at the cheapest rates
    (or below a cap): `max_price`, `sort: "price"`, `allow_fallbacks`."""
    if name in ("max_price", "allow_fallbacks"):
        return True
    if name == "sort":
        by = value.get("by") if isinstance(value, dict) else value
        return by == "price"
    return False


class OpenAIWire(Wire):
    name = "openai"
    usage_keys = (b'"usage"',)
    policed_fields = frozenset(
        {
            "model",
            # OpenRouter's fallback list and its stored presets (core/request.py `_one_model`).
            "models",
            "preset",
            "maxtokens",
            "maxcompletiontokens",
            "maxoutputtokens",
            "n",
            "bestof",
            "servicetier",
            "stream",
            "streamoptions",
            "messages",
            "input",
            "prompt",
            "instructions",
            # Mistral's Conversations API: its turns, its cap, an agent in place of a model.
            "inputs",
            "completionargs",
            "agentid",
        }
    )

    # OpenAI's stored objects, and those of the OpenAI-compatible vendors and gateways this
    # protocol serves (Azure's `/openai/...`, Mistral's, Together's, Gemini's surface).
    account_routes = AccountRoutes(
        # Chat completions stored with `store: true`, their messages, their metadata (POST
        # to one updates it). POST to the list itself generates.
        (READS, "/chat/completions"),
        (ANY, "/chat/completions/*/**"),
        # Stored responses and their input items; cancelling one (`/responses/{id}/cancel`).
        # `/responses/input_tokens` and `/responses/compact` are no stored response.
        ("GET HEAD DELETE", "/responses/**"),
        ("POST", "/responses/*/*/**"),
        (READS, "/conversations"),
        (ANY, "/conversations/*/**"),
        (READS, "/files"),
        (ANY, "/files/*/**"),
        (READS, "/uploads"),
        (ANY, "/uploads/*/**"),
        (READS, "/batches"),
        (ANY, "/batches/*/**"),
        (READS, "/batch/jobs"),  # Mistral's batches
        (ANY, "/batch/jobs/*/**"),
        (READS, "/vector_stores"),
        (ANY, "/vector_stores/*/**"),
        (READS, "/assistants"),
        (ANY, "/assistants/*/**"),
        (READS, "/threads"),
        (ANY, "/threads/*/**"),  # a run on a thread generates: not an account route
        (READS, "/fine_tuning/**"),
        (ANY, "/fine_tuning/jobs/*/**"),
        (ANY, "/fine_tuning/checkpoints/**"),
        (READS, "/fine-tunes"),  # Together's fine-tuning jobs
        (ANY, "/fine-tunes/*/**"),
        (READS, "/evals"),
        (ANY, "/evals/*/**"),
        (READS, "/containers"),
        (ANY, "/containers/*/**"),
        # Generated videos (Sora): POST /videos creates one (a generation).
        (READS, "/videos"),
        (ANY, "/videos/*/**"),
        (ANY, "/chatkit/threads/**"),
        (READS, "/agents"),  # Mistral's agents and document libraries
        (ANY, "/agents/*/**"),
        (READS, "/libraries"),
        (ANY, "/libraries/*/**"),
        # OpenRouter's presets: a POST to `/presets/{slug}/chat/completions` (or `messages`,
        # `responses`) stores the body's model, prompt and tools as the preset every app on
        # the account runs by that name; it generates nothing.
        (READS, "/presets"),
        (ANY, "/presets/*/**"),
        # Deleting a model deletes the owner's fine-tuned model; listing and looking one up
        # are not account routes.
        ("DELETE PUT PATCH POST", "/models/*/**"),
        # The Admin API (an admin key): the organisation's projects, keys and users.
        (ANY, "/organization/**"),
        # Ollama's own model management: the models one server keeps for every caller.
        ("POST DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("POST", "/api/create"),
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("HEAD POST", "/api/blobs/*"),
    )

    def route(self, method: str, path: str) -> Route:
        if method in ("GET", "HEAD", "DELETE"):
            return FREE
        if _PRESET_WRITE.search(path) is not None:
            # OpenRouter stores a preset from an inference body and answers with the preset:
            # no generation, though the path ends as one (an account route, above).
            return FREE
        if _ends(path, "/chat/completions"):
            return Route("metered", "chat", generates=True)
        if _ends(path, "/completions"):
            # Legacy completions, and the same shape elsewhere: Mistral's /fim/completions
            # and /agents/completions, DeepSeek's /beta/completions.
            return Route("metered", "completions", generates=True)
        if _ends(path, "/responses"):
            return Route("metered", "responses", generates=True)
        if _ends(path, "/embeddings"):
            return Route("metered", "embeddings")
        batch = _batch_route(path)
        if batch is not None:
            return batch
        if _ends(path, "/responses/compact"):
            # Compaction runs the model over the conversation and bills it; its reply is a
            # Responses object (`response.compaction`) with Responses usage.
            return Route("metered", "compact", generates=True)
        realtime = _realtime_route(path)
        if realtime is not None:
            return realtime
        if _ends(path, "/moderations"):
            return MODERATION
        if _ends(path, "/audio/transcriptions", "/audio/translations"):
            return FORM_WITH_MODEL
        media = _media_route(path)
        if media is not None:
            return media
        if _ends(path, "/responses/input_tokens") or _cancels_response(path):
            # Counting tokens, cancelling a background response.
            return FREE
        if "responses" in path.split("/")[:-1]:
            # Any other POST under /responses/ (a route OpenAI adds later) may generate.
            return _GENERATES_UNREAD
        if (
            _runs_assistant(path)
            or _runs_eval(path)
            # Ollama's native /api/chat and /api/generate; TGI's (and vLLM's and SGLang's
            # own servers') /generate, /generate_stream and bare `/`; llama.cpp's server's
            # /completion and /infill; a fine-tuning grader's run, which may sample a
            # grader model.
            or path == "/"
            or _ends(
                path,
                "/api/chat",
                "/generate",
                "/generate_stream",
                "/completion",
                "/infill",
                "/graders/run",
            )
        ):
            return _GENERATES_UNREAD
        if path in ("/messages", "/complete") or _ends(
            path, "/v1/messages", "/v1/complete", "/invocations"
        ):
            # A vendor's Anthropic-compatible Messages API beside its OpenAI one (DeepSeek's
            # and Moonshot's under /anthropic, vLLM's and Ollama's, a gateway's on the default
            # route, whose /v1 is its prefix), xAI's Anthropic-compatible legacy /v1/complete,
            # and vLLM's SageMaker-style /invocations (a chat or a completion, by its body):
            # they generate, in a shape this protocol does not read. Taken for routes that
            # generate nothing, MAX_TOKENS_CAP and MAX_MESSAGES let them by. (An Assistants
            # thread's /threads/{id}/messages generates nothing.)
            return _GENERATES_UNREAD
        conversation = _conversation_route(path)
        if conversation is not None:
            return conversation
        # Anything else (files, fine-tuning jobs, vector stores) may spend, and is refused
        # while usage is capped; it generates nothing an output cap bounds.
        return UNREADABLE

    def usage_in(self, event: Any) -> dict[str, Any] | None:
        if not isinstance(event, dict):
            return None
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            return response["usage"]  # Responses API stream: response.completed
        usage = event.get("usage")
        return usage if isinstance(usage, dict) else None

    def read_usage(self, usage: dict[str, Any], into: Usage) -> Usage | None:
        if "prompt_tokens" in usage:  # chat, completions, embeddings
            return _openai_usage(usage, "prompt_tokens", "completion_tokens")
        if "input_tokens" in usage or "output_tokens" in usage:  # Responses, transcriptions
            return _openai_usage(usage, "input_tokens", "output_tokens")
        return None

    def answers(self, document: dict[str, Any]) -> int:
        # Legacy completions' `best_of` generates (and bills) that many server-side and
        # returns the best `n` of them: each is an answer as far as the bill goes.
        count = max(_answers(document.get("n")), _answers(document.get("best_of")))
        prompt = document.get("prompt")
        # Legacy completions: a list of prompts is one answer (or n) per prompt.
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            count *= len(prompt)
        return count

    def fetching_tool(self, tool: Any) -> bool:
        # Web and file search results, code interpreter output and MCP results are input.
        return not (isinstance(tool, dict) and tool.get("type") in _OPENAI_CALLER_TOOLS)

    def dearer_rate(self, document: dict[str, Any]) -> str | None:
        # Priority processing bills about twice the standard rate; flex bills half; a tier
        # added later may bill anything. "auto" and "default" are the standard tier (or
        # Scale Tier units the owner bought ahead).
        tier = document.get("service_tier")
        if tier not in (None, "auto", "default", "flex"):
            return "service_tier"
        # OpenRouter serves a model from many providers at their own rates: its `provider`
        # preferences (`order`, `only`, `ignore`, a `sort` by throughput or latency, a
        # quantization) let a caller pick the dearest of them for a model priced at one
        # rate, and the `:nitro` variant (a throughput sort) admits priority-tier
        # endpoints, billed at priority rates. Only a cap on the price, the cheapest first
        # and the fallbacks' switch leave the rate where the price entry put it.
        provider = document.get("provider")
        if provider is not None and not (
            isinstance(provider, dict)
            and all(_cheapest_providers(k, v) for k, v in provider.items())
        ):
            return "provider"
        model = document.get("model")
        if isinstance(model, str) and model.casefold().rstrip().endswith(":nitro"):
            return "model"
        return None

    def priced_tools(self, route: Route, document: dict[str, Any]) -> list[str]:
        if route.name == "realtime":
            # A session's settings (core/realtime/session.py), where its tools sit.
            session = document.get("session")
            document = session if isinstance(session, dict) else {}
        found = []
        for tool in _tools(document):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in _OPENAI_TOKEN_TOOLS:
                found.append(str(kind)[:60])
        # Search billed per call or per source on OpenAI-compatible vendors too: chat's
        # search models, OpenRouter's plugins (web: per result), xAI's Live Search (per
        # source).
        if document.get("web_search_options") is not None:  # `{}` turns search on
            found.append("web_search_options")
        for name in ("plugins", "search_parameters"):
            if document.get(name) not in (None, [], {}):
                found.append(name)
        # OpenRouter's `:online` variant of any model is its web plugin under another name
        # (`openai/gpt-4o:online` is `plugins: [{"id": "web"}]`): a price entry matching the
        # model's name would count its tokens and none of its searches.
        model = document.get("model")
        if isinstance(model, str) and ":online" in model.casefold():
            found.append("model variant :online (web search)")
        if isinstance(model, str) and _SEARCHES_EVERY_CALL.search(model.casefold()):
            found.append(f"model {model[:60]!r} (searches the web on every call)")
        # Gemini's OpenAI-compatible endpoint takes its own options in `extra_body.google`,
        # a cache (`cached_content`, which may hold tools of its own) among them.
        extra = document.get("extra_body")
        google = extra.get("google") if isinstance(extra, dict) else None
        if isinstance(google, dict) and any(
            name.replace("_", "").lower() == "cachedcontent" for name in google
        ):
            found.append("extra_body.google.cached_content")
        if route.name != "completions" and isinstance(document.get("prompt"), dict):
            found.append("prompt")  # a stored prompt: its tools are set on the platform
        return found

    def stream_needs_usage_request(self, route: Route, document: Any) -> bool:
        if route.name not in ("chat", "completions") or not isinstance(document, dict):
            return False
        if document.get("stream") is not True:
            return False
        options = document.get("stream_options")
        return not (isinstance(options, dict) and options.get("include_usage") is True)

    # Chat and completions streams end with `data: [DONE]`; the openai SDK stops there.
    last_event_tail = b"[DONE]\n\n"

    def is_last_event(self, name: bytes, data: bytes) -> bool:
        return not name and data == b"[DONE]"


_ANTHROPIC_INPUT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_ANTHROPIC_FIELDS = (*_ANTHROPIC_INPUT_FIELDS, "output_tokens")


class AnthropicWire(Wire):
    name = "anthropic"
    usage_keys = (b'"usage"',)
    model_list_paging = "cursor"
    policed_fields = frozenset({"model", "maxtokens", "stream", "messages", "system", "speed"})

    # Anthropic's stored objects: POST /files and POST /messages/batches create one.
    account_routes = AccountRoutes(
        (READS, "/files"),
        (ANY, "/files/*/**"),
        # A batch's results hold every answer it generated; cancelling and deleting change it.
        (READS, "/messages/batches"),
        (ANY, "/messages/batches/*/**"),
        (READS, "/skills"),
        (ANY, "/skills/*/**"),
        # The Admin API (an admin key): the organisation's workspaces, keys and members.
        (ANY, "/organizations/**"),
    )

    def route(self, method: str, path: str) -> Route:
        if method in ("GET", "HEAD", "DELETE"):
            return FREE
        if _ends(path, "/messages/count_tokens"):
            return FREE
        if _ends(path, "/messages/batches"):
            return _BATCH
        if _ends(path, "/messages"):
            return Route("metered", "messages", generates=True)
        if _ends(path, "/complete", *_OPENAI_GENERATING) or "/experimental/" in path:
            # Legacy Text Completions (max_tokens_to_sample); the OpenAI SDK compatibility
            # (/v1/chat/completions), in OpenAI's shape; the prompt tools
            # (/v1/experimental/generate_prompt, improve_prompt, templatize_prompt).
            return _GENERATES_UNREAD
        return UNREADABLE

    def usage_in(self, event: Any) -> dict[str, Any] | None:
        if not isinstance(event, dict):
            return None
        message = event.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            return message["usage"]  # message_start
        usage = event.get("usage")
        return usage if isinstance(usage, dict) else None

    def read_usage(self, usage: dict[str, Any], into: Usage) -> Usage | None:
        if not any(name in usage for name in _ANTHROPIC_FIELDS):
            return None
        # message_start carries the input, each message_delta the running output count
        # (and, in newer replies, the input again): a field absent keeps its last value.
        if any(name in usage for name in _ANTHROPIC_INPUT_FIELDS):
            read = usage_count(usage.get("cache_read_input_tokens"))
            writes = usage_count(usage.get("cache_creation_input_tokens"))
            # Cache writes bill above the input rate: 1.25 times for five minutes, twice
            # for an hour. Without the split, all are taken as the dearer (fail closed).
            split = usage.get("cache_creation")
            if isinstance(split, dict):
                hour = usage_count(split.get("ephemeral_1h_input_tokens"))
                writes = max(writes, hour + usage_count(split.get("ephemeral_5m_input_tokens")))
                short = writes - hour
            elif writes and into.cache_write_tokens + into.cache_write_1h_tokens == writes:
                # A later event repeating the count without the split: the split read.
                short, hour = into.cache_write_tokens, into.cache_write_1h_tokens
            else:
                hour, short = writes, 0
            input_tokens = usage_count(usage.get("input_tokens")) + writes + read
            if input_tokens >= into.input_tokens:
                into = Usage(input_tokens, into.output_tokens, read, short, hour)
        if "output_tokens" in usage:
            into = into._replace(output_tokens=usage_count(usage["output_tokens"]))
        # Server-side compaction (beta compact-2026-01-12) samples more than once in one
        # request: the top-level figures count the non-compaction iterations only, and
        # the bill is the sum of every entry of `iterations`.
        iterations = usage.get("iterations")
        if isinstance(iterations, list):
            summed = Usage()
            for iteration in iterations:
                if isinstance(iteration, dict):
                    # One level only: an iteration's own `iterations` (none in Anthropic's
                    # replies) is not followed, so a reply nested deep cannot recurse.
                    flat = {k: v for k, v in iteration.items() if k != "iterations"}
                    summed = summed.plus(self.read_usage(flat, Usage()) or Usage())
            into = into.most(summed)
        return into

    def usage_final(self, event: dict[str, Any]) -> bool:
        # message_start's usage counts the prompt and one output token; the output is
        # counted by message_delta, whose usage sits at the top of the event.
        return event.get("type") != "message_start" and not isinstance(event.get("message"), dict)

    def fetching_tool(self, tool: Any) -> bool:
        # Server tools (web search and fetch, code execution, tool search) read their
        # results in as input; custom and client tools are the caller's to run.
        kind = tool.get("type", "custom") if isinstance(tool, dict) else None
        return not (
            isinstance(kind, str)
            and (kind == "custom" or kind.startswith(_ANTHROPIC_CALLER_TOOL_PREFIXES))
        )

    def dearer_rate(self, document: dict[str, Any]) -> str | None:
        # Fast mode (`speed: "fast"`, beta) bills Opus at up to six times its list price;
        # a speed added later may bill anything.
        return None if document.get("speed") in (None, "standard") else "speed"

    def input_elsewhere(self, document: dict[str, Any], body: bytes | None = None) -> str | None:
        if document.get("mcp_servers"):
            return "mcp_servers"  # the MCP connector: its tools' results are input
        return super().input_elsewhere(document, body)

    def priced_tools(self, route: Route, document: dict[str, Any]) -> list[str]:
        found = []
        for tool in _tools(document):
            kind = tool.get("type", "custom") if isinstance(tool, dict) else None
            if not isinstance(kind, str) or not (
                kind == "custom" or kind.startswith(_ANTHROPIC_TOKEN_TOOL_PREFIXES)
            ):
                found.append(str(kind)[:60])
        return found

    # Streams end with message_stop, after the message_delta that holds the usage; the
    # anthropic SDK stops reading there.
    last_event_tail = b'"message_stop"}\n\n'

    def is_last_event(self, name: bytes, data: bytes) -> bool:
        if name not in (b"", b"message_stop"):
            return False
        try:
            event = json.loads(data)
        except ValueError:
            return False
        return isinstance(event, dict) and event.get("type") == "message_stop"


_GEMINI_FIELDS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
    "prompt_token_count",
    "candidates_token_count",
    "total_token_count",
)


def _snake(camel: str) -> str:
    """A protobuf JSON name in its other spelling: `promptTokenCount` to `prompt_token_count`."""
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), camel)


class GeminiWire(Wire):
    name = "gemini"
    usage_keys = (b'"usageMetadata"', b'"usage_metadata"')
    # `{"models": [{"name": "models/gemini-2.5-pro", ...}], "nextPageToken": ...}`.
    model_list_field = "models"
    model_name_field = "name"
    model_name_is_segment = True
    model_list_paging = "token"
    policed_fields = frozenset(
        {
            "model",
            "contents",
            "generationconfig",
            "maxoutputtokens",
            "candidatecount",
            "requests",
            "systeminstruction",
        }
    )

    # Gemini's stored objects, in route_path's lower case (`cachedContents` is
    # `cachedcontents`). A file's upload start (`POST /upload/v1beta/files`) creates one and
    # is no account route, nor are its legs; an upload into a store is (it names the store).
    account_routes = AccountRoutes(
        (READS, "/files"),
        (ANY, "/files/*/**"),
        (READS, "/generatedfiles"),
        (ANY, "/generatedfiles/*/**"),
        (READS, "/cachedcontents"),
        (ANY, "/cachedcontents/*/**"),
        # A tuned model's generateContent generates: not an account route.
        (READS, "/tunedmodels"),
        (ANY, "/tunedmodels/*/**"),
        (READS, "/batches"),
        (ANY, "/batches/*/**"),
        # Long-running operations wherever they hang: a Veo video's
        # (`models/{model}/operations/{id}`), a tuning job's, an import's. The model's own
        # lookup (`models/{model}`) is not an account route.
        (ANY, "/operations/**"),
        (READS, "/corpora"),
        (ANY, "/corpora/*/**"),
        (READS, "/filesearchstores"),
        (ANY, "/filesearchstores/*/**"),
        # Stored interactions (the Interactions API); POST /interactions generates.
        (READS, "/interactions"),
        (ANY, "/interactions/*/**"),
    )

    def route(self, method: str, path: str) -> Route:
        if method in ("GET", "HEAD", "DELETE"):
            return FREE
        if path.startswith("/upload/") and path.endswith("/files"):
            return FREE  # a file upload (both legs): storing files costs nothing
        if path.endswith(":streamgeneratecontent"):
            return Route("metered", "stream-generate", generates=True)
        if path.endswith(":generatecontent"):
            return Route("metered", "generate", generates=True)
        if path.endswith(":counttokens"):
            return FREE
        # The method a path calls on its resource (`models/m:predict`), "" when none.
        _, colon, verb = path.rpartition("/")[2].rpartition(":")
        verb = verb if colon else ""
        if "generate" in verb and "batch" in verb:
            return _BATCH  # :batchGenerateContent, and a batch's updateGenerateContentBatch
        if "generate" in verb:
            # Every other generating method: the AQA model's :generateAnswer, PaLM's
            # :generateText and :generateMessage, any added later.
            return _GENERATES_UNREAD
        if "predict" in verb:
            return MEDIA  # Imagen's :predict, Veo's :predictLongRunning
        if path.endswith("/interactions") or _ends(path, *_OPENAI_GENERATING):
            # The Interactions API: a model's turn or an agent's run (Deep Research), capped
            # by its own generation_config, in a shape the policy does not read; an
            # OpenAI-shaped generation reached past the /gemini/v1beta/openai route.
            return _GENERATES_UNREAD
        if _squashed(path).endswith("/authtokens"):
            return EPHEMERAL_KEY
        return UNREADABLE

    def is_stream(self, route: Route, path: str, query: bytes, document: Any) -> bool:
        return route.name == "stream-generate"

    def usage_in(self, event: Any) -> dict[str, Any] | None:
        if not isinstance(event, dict):
            return None
        metadata = event.get("usageMetadata", event.get("usage_metadata"))
        return metadata if isinstance(metadata, dict) else None

    def read_usage(self, usage: dict[str, Any], into: Usage) -> Usage | None:
        if not any(name in usage for name in _GEMINI_FIELDS):
            return None

        def count(camel: str) -> int:
            # Protobuf JSON takes either spelling of a name, as the meter takes the
            # object's (`usage_metadata`): a count under the other would be left out.
            return max(usage_count(usage.get(camel)), usage_count(usage.get(_snake(camel))))

        output = count("candidatesTokenCount") + count("thoughtsTokenCount")
        prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
        total = count("totalTokenCount")
        if not prompt and not output:
            prompt = total
        # The total is every token billed: what it holds beyond the parts named (a part
        # a server reports in the total only) is charged as output, the dearer side, as
        # an OpenAI-compatible total is.
        output = max(output, total - prompt)
        return Usage(
            prompt,
            output,
            count("cachedContentTokenCount"),
            audio_input_tokens=modality_tokens(
                usage.get("promptTokensDetails", usage.get("prompt_tokens_details")), "AUDIO"
            ),
            audio_output_tokens=modality_tokens(
                usage.get("candidatesTokensDetails", usage.get("candidates_tokens_details")),
                "AUDIO",
            ),
        )

    def fetching_tool(self, tool: Any) -> bool:
        # URL context reads pages into the prompt, code execution feeds its results back,
        # search grounding its results: every kind but the caller's functions.
        return not isinstance(tool, dict) or any(
            name.replace("_", "").lower() not in _GEMINI_CALLER_TOOLS for name in tool
        )

    def priced_tools(self, route: Route, document: dict[str, Any]) -> list[str]:
        found = []
        for tool in _tools(document):
            kinds = list(tool) if isinstance(tool, dict) else [str(tool)]
            found += [
                kind[:60]
                for kind in kinds
                if kind.replace("_", "").lower() not in _GEMINI_TOKEN_TOOLS
            ]
        for name in document:
            if name.replace("_", "").lower() == "cachedcontent":
                found.append(name[:60])  # a cache may hold tools of its own
        return found

    def generation_config(self, document: dict[str, Any]) -> dict[str, Any]:
        config = document.get("generationConfig", document.get("generation_config"))
        return config if isinstance(config, dict) else {}

    def output_caps(
        self, document: dict[str, Any], route: Route | None = None
    ) -> list[tuple[str, Any]]:
        config = self.generation_config(document)
        return [
            (f"generationConfig.{name}", config[name])
            for name in ("maxOutputTokens", "max_output_tokens")
            if name in config
        ]

    def answers(self, document: dict[str, Any]) -> int:
        config = self.generation_config(document)
        return _answers(config.get("candidateCount", config.get("candidate_count")))

    def temperature(self, document: dict[str, Any]) -> Any:
        return self.generation_config(document).get("temperature")


WIRES: dict[str, Wire] = {
    "openai": OpenAIWire(),
    "anthropic": AnthropicWire(),
    "gemini": GeminiWire(),
}


# Google system parameters: those that change how the request is read, refused on every
# route (`overriding_parameter`), and those that shape the reply, refused while usage is
# capped (`usage_hiding_parameter`); `alt` may ask for JSON or SSE only.
_GOOGLE_OVERRIDES = frozenset({b"httpmethod", b"ct"})
_GOOGLE_REPLY_SHAPES = frozenset({b"fields", b"callback"})
_ALT_READ = frozenset({b"json", b"sse"})


def _system_parameters(query: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(name as Google reads it, name as sent, value) for each query parameter: decoded,
    lower case, without the `$` that Google's system parameters may carry."""
    found = []
    for part in query.split(b"&"):
        raw, _, value = part.partition(b"=")
        sent = unquote_to_bytes(raw)
        found.append((sent.strip().lower().removeprefix(b"$"), sent, unquote_to_bytes(value)))
    return found


def overriding_parameter(query: bytes) -> str | None:
    """The name of a query parameter that would have the upstream read the request
    otherwise than the proxy did; None when there is none.

    Google's system parameters (cloud.google.com/apis/docs/system-parameters), read by every
    Google API as `name` or `$name` in any encoding: `$httpMethod` would run a GET (a free
    read here) as POST, `$ct` would read the body as another type than the rules read.
    Checked on every protocol: Gemini's OpenAI-compatible surface, and any route
    MODEL_ROUTES sends there, is served by Google's platform too, and no other provider
    gives these names a meaning a caller needs."""
    if query:
        for name, sent, _ in _system_parameters(query):
            if name in _GOOGLE_OVERRIDES:
                return sent.decode("latin-1")[:40]
    return None


def usage_hiding_parameter(query: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The name of a query parameter or header that would have Google shape a reply so the
    meter cannot read its usage (a field mask without usageMetadata, a protobuf or JSONP
    reply); None when there is none. Under a budget or token limit such a call would be
    charged only its reservation, an estimate from the body, while Google bills what ran
    (a cachedContent's million tokens are not in the body)."""
    if query:
        for name, sent, value in _system_parameters(query):
            if name in _GOOGLE_REPLY_SHAPES or (name == b"alt" and value.lower() not in _ALT_READ):
                return sent.decode("latin-1")[:40]
    for name, _ in headers:
        if name == b"x-goog-fieldmask":
            return "X-Goog-FieldMask"
    return None
