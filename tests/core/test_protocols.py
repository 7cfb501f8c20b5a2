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
