"""The protocols' routes (core/protocols.py): paths read as an upstream would read them."""

from __future__ import annotations

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
