"""What the proxy knows of each provider's realtime WebSocket protocol, by wire name.

- OpenAI Realtime: `GET <base>/realtime?model=...`; servers send their key as
  `Authorization: Bearer`, browsers (which cannot set headers on a WebSocket) as the
  subprotocol `openai-insecure-api-key.<key>` beside `realtime`. Usage: each
  `response.done` event's `response.usage`, summed over the session.
- Gemini Live: `<host>/ws/google.ai.generativelanguage.<version>.GenerativeService.
  BidiGenerateContent`, key in `x-goog-api-key` or `?key=`; the model is named in the
  client's first message, `{"setup": {"model": "models/..."}}`. Usage: `usageMetadata`
  on server messages, per turn (a turn may repeat growing figures: the largest of each
  turn counts, and turns add up).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from core.headers import ACCOUNT_SELECTORS, CALLER_CREDENTIALS
from core.protocols import UnreadableUsage, Usage, modality_tokens, usage_count
from core.request import RepeatedField, strict_json

BROWSER_KEY_PREFIX = "openai-insecure-api-key."


class SessionMeter:
    """Reads usage from the upstream's frames as they pass; `total` is the session's."""

    def __init__(self) -> None:
        self.total = Usage()
        self.frames = 0
        # Responses (turns) that ended without usage this meter could read.
        self.unread = 0
        # Responses (turns) the provider began.
        self.begun = 0

    def feed(self, frame: str | bytes) -> None:
        raise NotImplementedError

    def finish(self) -> Usage:
        return self.total

    def responses_begun(self) -> int:
        """How many responses (turns) the provider has begun: each is a request to the
        rules that count requests, whether a caller's frame asked for it or the provider's
        own turn detection did."""
        return self.begun

    def unread_turns(self) -> int:
        """How many of the provider's responses ended without usage this meter could read.
        Zero tokens would be a guess, and the wrong way: each is charged the session's
        reservation, and under a cap the session ends at the first (fail closed, as a
        stream's continuation does, core/proxy/recovery.py)."""
        return self.unread

    def cut_short(self) -> bool:
        """Whether a response was under way (begun, its usage not yet reported) when the
        session ended: then what was read is partial, and the session is settled as a
        reply cut short (at least its reservation), as an HTTP stream the caller left."""
        return False


def _parse(frame: str | bytes) -> Any:
    try:
        return json.loads(frame)
    except ValueError:
        return None


def _add(one: Usage, other: Usage) -> Usage:
    return one.plus(other)


_TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


class OpenAIRealtimeMeter(SessionMeter):
    """Sums each `response.done`'s usage and each input transcription's (billed apart, by
    the transcription model; a figure in seconds, whisper-1's, is not tokens and is left
    out); counts the responses begun (`response.created`) and not yet done."""

    def __init__(self) -> None:
        super().__init__()
        self.open_responses = 0

    def cut_short(self) -> bool:
        return self.open_responses > 0

    def feed(self, frame: str | bytes) -> None:
        text = isinstance(frame, str)
        done = '"response.done"' if text else b'"response.done"'
        created = '"response.created"' if text else b'"response.created"'
        transcribed = "_transcription.completed" if text else b"_transcription.completed"
        if (
            done not in frame  # type: ignore[operator]
            and created not in frame  # type: ignore[operator]
            and transcribed not in frame  # type: ignore[operator]
        ):
            return  # audio deltas and the like: never parsed
        event = _parse(frame)
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "response.created":
            self.open_responses += 1
            self.begun += 1
            return
        if kind == _TRANSCRIBED:
            usage = event.get("usage")
            if isinstance(usage, dict) and usage.get("type", "tokens") == "tokens":
                self._add_or_unread(usage)
            return
        if kind != "response.done":
            return
        self.open_responses = max(0, self.open_responses - 1)
        response = event.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            self._add_or_unread(usage)
        else:
            self.unread += 1

    def _add_or_unread(self, usage: dict[str, Any]) -> None:
        try:
            self._add(usage)
        except UnreadableUsage:
            self.unread += 1  # a count that is no count: charged as a response unread

    def _add(self, usage: dict[str, Any]) -> None:
        details = usage.get("input_token_details")
        cached = usage_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        out = usage.get("output_token_details")
        # Audio tokens bill at the model's audio rates (many times its text rates).
        self.total = _add(
            self.total,
            Usage(
                usage_count(usage.get("input_tokens")),
                usage_count(usage.get("output_tokens")),
                cached,
                audio_input_tokens=usage_count(details.get("audio_tokens"))
                if isinstance(details, dict)
                else 0,
                audio_output_tokens=usage_count(out.get("audio_tokens"))
                if isinstance(out, dict)
                else 0,
            ),
        )


class GeminiLiveMeter(SessionMeter):
    """The largest figures of each turn, added up over the turns; a turn is under way from
    the model's first output (`modelTurn`) or usage until its `turnComplete`."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = Usage()
        self.answering = False
        # Whether the turn under way has reported usage, and has produced output.
        self.turn_read = False
        self.turn_output = False

    def cut_short(self) -> bool:
        return self.answering

    def feed(self, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        if "odelTurn" in text or "odel_turn" in text:
            # Not parsed (audio): a mention anywhere errs towards "under way", which only
            # matters if the session ends before the turn's turnComplete.
            self.answering = True
            if not self.turn_output:
                self.turn_output = True
                self.begun += 1
        if "sageMetadata" not in text and "urnComplete" not in text:
            return
        message = _parse(text)
        if not isinstance(message, dict):
            return
        metadata = message.get("usageMetadata", message.get("usage_metadata"))
        if isinstance(metadata, dict):
            self.answering = True
            try:
                read = _gemini_usage(metadata)
            except UnreadableUsage:
                # A count that is no count: the turn stays unread unless a later message
                # of it reports figures that can be read (charged as a turn unread).
                pass
            else:
                self.turn_read = True
                self.turn = self.turn.most(read)
        content = message.get("serverContent", message.get("server_content"))
        if isinstance(content, dict) and (
            content.get("turnComplete") is True or content.get("turn_complete") is True
        ):
            if self.answering and not self.turn_read:
                self.unread += 1  # the model answered; what it cost was never said
            self.total = _add(self.total, self.turn)
            self.turn = Usage()
            self.answering = self.turn_read = self.turn_output = False

    def finish(self) -> Usage:
        return _add(self.total, self.turn)


def _gemini_usage(metadata: dict[str, Any]) -> Usage:
    def field(camel: str, snake: str) -> int:
        return usage_count(metadata.get(camel, metadata.get(snake)))

    prompt = field("promptTokenCount", "prompt_token_count") + field(
        "toolUsePromptTokenCount", "tool_use_prompt_token_count"
    )
    output = (
        field("responseTokenCount", "response_token_count")
        or field("candidatesTokenCount", "candidates_token_count")
    ) + field("thoughtsTokenCount", "thoughts_token_count")
    # The total is every token billed: what it holds beyond the parts named is output.
    output = max(output, field("totalTokenCount", "total_token_count") - prompt)

    def audio(camel: str, snake: str) -> int:
        return modality_tokens(metadata.get(camel, metadata.get(snake)), "AUDIO")

    return Usage(
        prompt,
        output,
        field("cachedContentTokenCount", "cached_content_token_count"),
        audio_input_tokens=audio("promptTokensDetails", "prompt_tokens_details"),
        audio_output_tokens=audio("responseTokensDetails", "response_tokens_details")
        or audio("candidatesTokensDetails", "candidates_tokens_details"),
    )


def _name_key(name: str) -> str:
    # `model`, `MODEL`, `Model` and (decoded by parse_qsl) `%6Dodel` are one parameter to a
    # lenient upstream.
    return name.replace("_", "").lower()


def query_value(query: bytes, name: str) -> str | None:
    """The one value of a policed query parameter. Named twice, in any spelling, is refused:
    the proxy would check one value while the upstream honoured the other."""
    if b";" in query:
        # Some servers split a query on `;` as well as `&`: `?model=a;model=b` would be one
        # value here and two there.
        raise RepeatedField("The query may not contain ';'; separate parameters with '&'.")
    wanted = _name_key(name)
    found = [
        value
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if _name_key(key) == wanted
    ]
    if len(found) > 1:
        raise RepeatedField(f"The query names {name!r} more than once; send it once.")
    return found[0] if found else None


def parse_frame(frame: str | bytes, policed: frozenset[str]) -> Any:
    """A caller's JSON frame that the proxy decides on, parsed as strictly as an HTTP body
    (core/request.py): a field named twice, or a policed one in two spellings, is
    refused. None when the frame is not JSON."""
    try:
        return strict_json(frame if isinstance(frame, bytes) else frame.encode(), policed)
    except RepeatedField:
        raise
    except (ValueError, RecursionError):
        return None


class RealtimeWire:
    """One provider's realtime protocol."""

    name = "openai"
    # The model comes with the first client message rather than the URL.
    model_in_first_message = False
    # Fields of the caller's frames read with the repeated-field checks.
    policed: frozenset[str] = frozenset({"model", "type", "session", "setup"})
    # Substrings of a caller frame that may start a turn or name a model: only those frames
    # are parsed (audio chunks never are).
    markers: tuple[str, ...] = ()

    def is_session_path(self, path: str) -> bool:
        raise NotImplementedError

    def model_in_query(self, query: bytes) -> str | None:
        return None

    def model_in_setup(self, message: Any) -> str | None:
        return None

    def inspect(self, message: Any, model: str | None) -> tuple[bool, str | None]:
        """For a parsed caller frame: whether it starts a turn, and why it is refused (it
        names another model, or configures the session again), or None."""
        return False, None

    def meter(self) -> SessionMeter:
        raise NotImplementedError

    def new_settings(self, message: Any) -> dict[str, Any] | None:
        """The session settings a parsed caller frame changes (OpenAI's session.update), if
        any: the rules on models read them as they read a mint's body."""
        return None

    def response_settings(self, message: Any) -> dict[str, Any] | None:
        """The settings a parsed caller frame gives one response only (OpenAI's
        response.create `response`: its own tools, prompt, instructions), if any: the
        rules read them too, over the session's."""
        return None


class OpenAIRealtime(RealtimeWire):
    name = "openai"

    def is_session_path(self, path: str) -> bool:
        return path.endswith("/realtime")

    markers = ("response.create", "input_audio_buffer.commit", "session.update")

    def model_in_query(self, query: bytes) -> str | None:
        # Azure names the model as its deployment: the one the proxy checks must be the one
        # the provider reads, so naming both is refused like naming either twice.
        model = query_value(query, "model")
        deployment = query_value(query, "deployment")
        if model is not None and deployment is not None:
            raise RepeatedField(
                "The query names both 'model' and 'deployment'; name the model once."
            )
        return model if model is not None else deployment

    def inspect(self, message: Any, model: str | None) -> tuple[bool, str | None]:
        if not isinstance(message, dict):
            return False, None
        kind = message.get("type")
        if kind in ("response.create", "input_audio_buffer.commit"):
            return True, None
        if kind == "session.update":
            session = message.get("session")
            named = session.get("model") if isinstance(session, dict) else None
            if named is not None and named != model:
                return False, "A session.update may not change the session's model."
        return False, None

    def meter(self) -> SessionMeter:
        return OpenAIRealtimeMeter()

    def new_settings(self, message: Any) -> dict[str, Any] | None:
        # The beta's transcription sessions take their settings the same way.
        kinds = ("session.update", "transcription_session.update")
        if isinstance(message, dict) and message.get("type") in kinds:
            session = message.get("session")
            return session if isinstance(session, dict) else None
        return None

    def response_settings(self, message: Any) -> dict[str, Any] | None:
        if isinstance(message, dict) and message.get("type") == "response.create":
            response = message.get("response")
            return response if isinstance(response, dict) else None
        return None


class GeminiLive(RealtimeWire):
    name = "gemini"
    model_in_first_message = True

    def is_session_path(self, path: str) -> bool:
        # Constrained sessions (ephemeral tokens) go to Google directly, not through here.
        return path.startswith("/ws/") and path.endswith(".generativeservice.bidigeneratecontent")

    markers = ("setup", "lientContent", "lient_content", "ctivityStart", "ctivity_start")

    def model_in_setup(self, message: Any) -> str | None:
        setup = message.get("setup") if isinstance(message, dict) else None
        model = setup.get("model") if isinstance(setup, dict) else None
        return model if isinstance(model, str) else None

    def inspect(self, message: Any, model: str | None) -> tuple[bool, str | None]:
        if not isinstance(message, dict):
            return False, None
        if "setup" in message:
            return False, "A Live session is set up once, by its first message."
        realtime = message.get("realtimeInput", message.get("realtime_input"))
        starts = any(name in message for name in ("clientContent", "client_content")) or (
            isinstance(realtime, dict)
            and any(name in realtime for name in ("activityStart", "activity_start"))
        )
        return starts, None

    def meter(self) -> SessionMeter:
        return GeminiLiveMeter()


REALTIME_WIRES: dict[str, RealtimeWire] = {"openai": OpenAIRealtime(), "gemini": GeminiLive()}


# A browser cannot set headers on a WebSocket, so OpenAI takes some as subprotocols named
# `<header>.<value>` (`openai-organization.org-...`, `openai-project.proj_...`). Those the
# proxy drops from an HTTP request (credentials, the account a key bills) are dropped here
# too: the same rule on both surfaces.
_DROPPED_AS_SUBPROTOCOLS = frozenset(
    name.decode() for name in ACCOUNT_SELECTORS | CALLER_CREDENTIALS
) | {"openai-insecure-api-key"}


def split_browser_key(subprotocols: list[str]) -> tuple[str | None, list[str]]:
    """The caller's credential from OpenAI's browser subprotocol, and the others to pass on
    (without any that carries a credential or chooses the account billed)."""
    credential = None
    kept = []
    for protocol in subprotocols:
        if protocol.startswith(BROWSER_KEY_PREFIX):
            credential = protocol[len(BROWSER_KEY_PREFIX) :]
        elif protocol.partition(".")[0].strip().lower() not in _DROPPED_AS_SUBPROTOCOLS:
            kept.append(protocol)
    return credential, kept
