"""What a misbehaving upstream, or a caller's prompt, can put into the proxy's telemetry:
an upstream's values are bounded as the caller's are (docs/security.md counts a misbehaving
upstream among the hostile), and captured content holds no key of any shape the proxy
knows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from core.app import create_app
from core.config import load_settings
from core.telemetry.content import ContentCapture
from core.telemetry.record import RequestRecord
from core.telemetry.reply import ReplyFacts, SessionFacts
from core.types import Receive, Scope, Send
from tests.support.servers import FAKE_TOKEN, proxy_env, serve_in_thread
from tests.telemetry.otlp_receiver import Received, otlp_exporting

# A finish reason no provider writes: 200,000 characters (a line well under the reply
# tap's 1 MiB line bound), sixteen times over.
LONG_REASON = "stop" + "x" * 200_000


@pytest.fixture
def otlp() -> Iterator[Received]:
    with otlp_exporting(OTEL_METRICS_EXPORTER="none") as received:
        yield received


async def long_reasons_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """An OpenAI-shaped stream whose sixteen choices each end with a huge finish reason."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index in range(16):
        choice = {"index": index, "delta": {}, "finish_reason": LONG_REASON}
        event = {"model": "gpt-hostile", "choices": [choice]}
        body = b"data: " + json.dumps(event).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def test_an_upstreams_finish_reasons_reach_the_span_bounded(otlp: Received) -> None:
    """gen_ai.request.model, gen_ai.response.model and the caller's label are cut to 200
    characters before they go on a span; the finish reasons, read from the reply, were
    kept whole: an upstream writing long ones had every span carry up to 16 MiB (the
    reply tap's bound on a line, sixteen reasons), held in the export queue of 2,048 spans
    and sent to the collector, which refuses the whole batch past its message size."""
    with serve_in_thread(long_reasons_upstream) as upstream:
        app = create_app(load_settings(proxy_env(upstream.url)))
        with serve_in_thread(app) as proxy:
            reply = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                headers={"authorization": f"Bearer {FAKE_TOKEN}"},
                json={"model": "gpt-hostile", "messages": [], "stream": True},
                timeout=30,
            )
            assert reply.status_code == 200
            [span] = otlp.wait_for_spans(
                lambda s: s.attributes.get("gen_ai.request.model") == "gpt-hostile"
            )
    reasons = span.attributes["gen_ai.response.finish_reasons"]
    assert len(reasons) == 16
    assert all(reason.startswith("stop") and len(reason) <= 200 for reason in reasons)


class _Meter:
    def feed(self, frame: str | bytes) -> None:
        return None


def test_a_realtime_sessions_finish_reasons_are_bounded() -> None:
    """The same bound on an OpenAI Realtime session's `response.done` reasons."""
    record = RequestRecord(kind="websocket", method="GET", path="/v1/realtime")
    facts = SessionFacts(record, _Meter())  # type: ignore[arg-type]
    done = {"type": "response.done", "response": {"status": LONG_REASON}}
    facts.feed(json.dumps(done))
    [reason] = record.finish_reasons
    assert reason.startswith("stop") and len(reason) <= 200


def test_a_whole_replys_finish_reasons_are_bounded() -> None:
    record = RequestRecord(kind="http", method="POST", path="/v1/chat/completions")
    tap = ReplyFacts(record, "anthropic", False, responses=False)
    tap.feed(json.dumps({"model": "claude-x", "stop_reason": LONG_REASON}).encode())
    tap.flush()
    [reason] = record.finish_reasons
    assert reason.startswith("stop") and len(reason) <= 200


# ---- a caller's prompt, captured ---------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "gsk_" + "FAKE0groq0key0shape0123456789",
        "xai-" + "FAKE0xai0key0shape01234567890",
        "pplx-" + "FAKE0perplexity0key0shape0123",
        "fw_" + "FAKE0fireworks0key0shape01234",
    ],
)
def test_captured_content_replaces_every_key_shape_the_proxy_knows(key: str) -> None:
    """Content capture replaces "anything shaped like a key" (docs/observability.md), but
    knew only OpenAI's, Anthropic's and Google's shapes, JWTs, bearer credentials and its
    own tokens: a Groq, xAI, Perplexity or Fireworks key a user pasted into a prompt went
    to the collector, though the proxy masks those very shapes (core/config.py) in its
    own start-up problems."""
    capture = ContentCapture([])
    captured = capture.capture({"messages": [{"role": "user", "content": f"is {key} valid?"}]})
    assert captured is not None
    text = captured["gen_ai.input.messages"]
    assert key not in text and key[6:18] not in text
    assert "is [redacted] valid?" in text
