"""The protocols' routes (core/protocols.py): paths read as an upstream would read them."""

from __future__ import annotations

import json
import re

import pytest

from core.protocols import WIRES, route_path


def test_route_paths_are_read_as_an_upstream_would() -> None:
    assert route_path("/v1/Chat//completions/") == "/v1/chat/completions"
    assert route_path("/v1/chat%2Fcompletions") == "/v1/chat/completions"
    openai = WIRES["openai"]
    assert openai.route("POST", "/v1/chat/completions").kind == "metered"
    assert openai.route("POST", "/v1/realtime/client_secrets").kind == "minting"
    # Creating a WebRTC call is minting: its media flows outside the proxy (issue 19).
    assert openai.route("POST", "/v1/realtime/calls").kind == "minting"
    assert openai.route("GET", "/v1/models").kind == "free"
    gemini = WIRES["gemini"]
    assert gemini.route("POST", "/v1beta/models/g:streamgeneratecontent").name == "stream-generate"
    assert gemini.route("POST", "/v1beta/models/g:batchgeneratecontent").generates


def test_only_what_spends_nothing_under_responses_is_free() -> None:
    openai = WIRES["openai"]
    # Compaction runs the model and bills it (finding 5): metered, read as a response.
    compact = openai.route("POST", "/v1/responses/compact")
    assert (compact.kind, compact.generates) == ("metered", True)
    assert openai.route("POST", "/v1/responses/input_tokens").kind == "free"
    assert openai.route("POST", "/v1/responses/resp_1/cancel").kind == "free"
    assert openai.route("GET", "/v1/responses/resp_1/input_items").kind == "free"
    assert openai.route("DELETE", "/v1/responses/resp_1").kind == "free"
    # Anything else under /responses/ may spend: the fail-closed kind, never free.
    for path in (
        "/v1/responses/resp_1",
        "/v1/responses/resp_1/input_items",
        "/v1/responses/resp_1/cancel/more",
        "/v1/responses/summarize",
        "/v1/responses//cancel",
    ):
        assert openai.route("POST", route_path(path)).kind == "unreadable", path


def test_input_named_but_not_carried_is_found_and_inline_input_is_not() -> None:
    openai, anthropic, gemini = WIRES["openai"], WIRES["anthropic"], WIRES["gemini"]
    schema = {"type": "object", "properties": {"file_id": {"type": "string"}}}
    function = {"type": "function", "function": {"name": "f", "parameters": schema}}
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    carried = {"model": "m", "messages": [{"role": "user", "content": [inline]}]}
    assert openai.input_elsewhere({**carried, "tools": [function]}) is None
    assert openai.input_elsewhere({"input": [{"type": "item_reference", "id": "msg_1"}]})
    assert openai.input_elsewhere({"conversation": {"id": "conv_1"}}) == "conversation"
    assert openai.input_elsewhere({"input": [{"type": "input_image", "image_url": "https://x"}]})
    assert openai.input_elsewhere({"tools": [{"type": "mcp", "server_url": "https://x"}]})
    assert anthropic.input_elsewhere({"tools": [{"type": "web_fetch_20250910"}]})
    assert anthropic.input_elsewhere({"mcp_servers": [{"url": "https://x"}]})
    assert anthropic.input_elsewhere({"tools": [{"name": "f", "input_schema": schema}]}) is None
    assert gemini.input_elsewhere({"contents": [{"parts": [{"file_data": {"file_uri": "x"}}]}]})
    assert gemini.input_elsewhere({"tools": [{"url_context": {}}]})
    assert gemini.input_elsewhere({"contents": [{"parts": [{"inlineData": {}}]}]}) is None


def _escaped(document: object) -> bytes:
    """`document` as JSON with every letter of every string written as a `\\u` escape."""
    text = json.dumps(document)
    return re.sub(r"[A-Za-z]", lambda m: f"\\u{ord(m.group()):04x}", text).encode()


@pytest.mark.parametrize(
    ("wire", "document"),
    [
        ("openai", {"input": [{"type": "item_reference", "id": "msg_1"}]}),
        ("openai", {"input": [{"type": "input_image", "image_url": "https://x"}]}),
        ("openai", {"messages": [{"content": [{"type": "file", "file": {"file_id": "f"}}]}]}),
        ("anthropic", {"messages": [{"content": [{"source": {"type": "url", "url": "u"}}]}]}),
        ("gemini", {"contents": [{"parts": [{"fileData": {"fileUri": "x"}}]}]}),
        ("openai", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
def test_the_body_spares_the_walk_only_where_it_could_find_nothing(
    wire: str, document: dict[str, object]
) -> None:
    """The bytes the document came from decide only whether it is walked: however they
    spell it (compact, spaced, every letter escaped, UTF-16 or UTF-32, which the parser
    takes), the answer is the one the walk gives."""
    reader = WIRES[wire]
    expected = reader.input_elsewhere(document)
    text = json.dumps(document)
    for body in (
        text.encode(),
        json.dumps(document, separators=(",", ":")).encode(),
        _escaped(document),
        text.encode("utf-16"),
        text.encode("utf-32-le"),
    ):
        assert json.loads(body) == document
        assert reader.input_elsewhere(document, body) == expected, body[:80]


def test_counts_are_read_as_the_upstreams_read_them() -> None:
    import pytest

    from core.protocols import UnreadableCount

    openai, gemini = WIRES["openai"], WIRES["gemini"]
    assert openai.answers({"n": 2, "best_of": 5}) == 5
    assert openai.answers({"n": " 3 ", "prompt": ["a", "b"]}) == 6
    assert openai.answers({"n": 4.0}) == 4
    assert openai.answers({"n": None}) == openai.answers({"n": -2}) == 1
    assert gemini.answers({"generationConfig": {"candidateCount": "8"}}) == 8
    assert openai.answers({"n": "9" * 5000}) > 10**6  # refused as too many, not parsed
    # Protobuf JSON (Gemini) takes exponent notation for an integer, in a string too.
    assert gemini.answers({"generationConfig": {"candidateCount": "1e1"}}) == 10
    for unreadable in ("x", 2.5, float("nan"), [4], "2.5e0", {"n": 1}):
        with pytest.raises(UnreadableCount):
            openai.answers({"n": unreadable})


def test_conversation_state_is_read_at_the_top_only() -> None:
    openai = WIRES["openai"]
    assert openai.input_elsewhere({"previous_response_id": "resp_1"}) == "previous_response_id"
    note = {"role": "user", "content": "hi", "metadata": {"conversation": "mine"}}
    assert openai.input_elsewhere({"messages": [note], "metadata": {"conversation": "x"}}) is None
