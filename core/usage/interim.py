"""TEMPORARY: records each relayed reply's usage in the ledger until the settle stage does.

The lead's request-path rewrite (core/proxy) will meter replies and call
`UsageLedger.record` from its settle stage; until then the endpoint wraps `send` with
`record_usage_on` (a two-line hook in core/proxy/endpoint.py), so the dashboard and
`llm-proxy usage` have figures. It reads only what a reply reports (no prices yet: cost 0)
and never changes a byte of it. Delete this module once the settle stage records usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from core.types import Message, Send
from core.usage.ledger import UsageEntry, UsageLedger

if TYPE_CHECKING:
    from core.access.credentials import Caller

logger = logging.getLogger("llm_proxy")

_MAX_JSON = 4 * 1024 * 1024
_MAX_LINE = 1024 * 1024


def caller_id(caller: Caller) -> str:
    """The ledger's stable caller id: token:<id>, user:<sub>, shared or anonymous."""
    if caller.record is not None:
        return "token:" + caller.record.id
    if caller.label == "access-token":
        return "shared"
    return caller.label  # "user:<sub>" or "anonymous"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ReplyUsage:
    """Input, output and cached input tokens as OpenAI, Anthropic or Gemini report them."""

    def __init__(self) -> None:
        self.input = self.output = self.cached = 0
        self.model = ""
        self.seen = False

    def read(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if isinstance(event.get("response"), dict):
            event = event["response"]  # Responses API stream: response.completed
        if isinstance(event.get("message"), dict):
            event = event["message"]  # Anthropic message_start
        if isinstance(event.get("model"), str) and not self.model:
            self.model = event["model"]
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.seen = True
            if "prompt_tokens" in usage:  # OpenAI chat
                self.input = _int(usage["prompt_tokens"])
                self.output = _int(usage.get("completion_tokens"))
                details = usage.get("prompt_tokens_details")
                if isinstance(details, dict):
                    self.cached = _int(details.get("cached_tokens"))
                return
            if "input_tokens" in usage:  # Anthropic, OpenAI Responses
                self.input = _int(usage["input_tokens"]) + _int(
                    usage.get("cache_creation_input_tokens")
                )
                self.cached = _int(usage.get("cache_read_input_tokens"))
                details = usage.get("input_tokens_details")
                if isinstance(details, dict):
                    self.cached = _int(details.get("cached_tokens"))
                else:
                    self.input += self.cached
            if "output_tokens" in usage:
                self.output = _int(usage["output_tokens"])  # a running total in streams
            return
        metadata = event.get("usageMetadata")
        if isinstance(metadata, dict):
            self.seen = True
            self.input = _int(metadata.get("promptTokenCount"))
            self.output = _int(metadata.get("candidatesTokenCount")) + _int(
                metadata.get("thoughtsTokenCount")
            )
            self.cached = _int(metadata.get("cachedContentTokenCount"))
            if isinstance(event.get("modelVersion"), str) and not self.model:
                self.model = event["modelVersion"]


def _requested_model(body: bytes) -> str:
    if not body or b'"model"' not in body:
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    model = document.get("model") if isinstance(document, dict) else None
    return model.removeprefix("models/")[:200] if isinstance(model, str) else ""


def _model_in_path(remainder: str, marker: str) -> str:
    if not marker or marker not in remainder:
        return ""
    return remainder.split(marker, 1)[1].split("/", 1)[0].split(":", 1)[0][:200]


def record_usage_on(
    send: Send,
    ledger: UsageLedger,
    caller: Caller,
    provider: str,
    body: bytes,
    remainder: str = "",
    model_in_path: str = "",
) -> Send:
    """`send`, reading the reply's usage on the way and recording it before the last
    body message (a function platform may freeze the instance right after)."""
    usage = ReplyUsage()
    state: dict[str, Any] = {"ok": False, "stream": False, "json": None, "size": 0, "rest": b""}

    async def send_recording(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            state["ok"] = message["status"] < 400
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    lowered = value.lower()
                    state["stream"] = lowered.startswith(b"text/event-stream")
                    state["json"] = [] if b"json" in lowered else None
        elif kind == "http.response.body" and state["ok"]:
            chunk = message.get("body", b"")
            if state["stream"]:
                lines = (state["rest"] + chunk).split(b"\n")
                state["rest"] = lines.pop()[:_MAX_LINE]
                for line in lines:
                    if line.startswith(b"data:") and (b"sage" in line or b"model" in line):
                        _read(usage, line[5:])
            elif state["json"] is not None:
                state["size"] += len(chunk)
                if state["size"] > _MAX_JSON:
                    state["json"] = None
                else:
                    state["json"].append(chunk)
            if not message.get("more_body", False):
                if state["stream"] and state["rest"].startswith(b"data:"):
                    _read(usage, state["rest"][5:])
                elif state["json"]:
                    _read(usage, b"".join(state["json"]))
                if usage.seen:
                    model = (
                        _model_in_path(remainder, model_in_path)
                        or _requested_model(body)
                        or usage.model
                    )
                    await _record(ledger, caller, provider, model, usage)
        await send(message)

    return send_recording


def _read(usage: ReplyUsage, raw: bytes) -> None:
    try:
        usage.read(json.loads(raw))
    except ValueError:
        return


async def _record(
    ledger: UsageLedger, caller: Caller, provider: str, model: str, usage: ReplyUsage
) -> None:
    entry = UsageEntry(
        caller=caller_id(caller),
        provider=provider,
        model=model,
        input_tokens=usage.input,
        output_tokens=usage.output,
        cached_input_tokens=usage.cached,
    )
    try:
        if ledger.store.blocking:
            await asyncio.to_thread(ledger.record, entry)
        else:
            ledger.record(entry)
    except Exception as exc:  # bookkeeping only: the reply goes on
        logger.warning("usage ledger write failed: %s", type(exc).__name__)
