"""Text that is valid JSON yet not Unicode: `"\\ud800"` decodes to a lone surrogate, which
no UTF-8 encoder takes. Where the proxy keys on such a string itself (a model name in the
ledger's store key, a token's label in the dashboard's reply) it must refuse it up front in
the caller's shape, not fail later with the reply half sent or the dashboard unreadable."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.admin import ADMIN_TOKEN
from tests.support.metered import AUTH, JSON, metered, models_or
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import FAKE_TOKEN

LONE = b"\\ud800"  # the JSON escape, as a client sends it (json.dumps writes it so)


def _ok(request: dict[str, Any]) -> Any:
    return (
        200,
        JSON,
        [(0, b'{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}')],
    )


def test_a_model_name_that_is_not_unicode_never_breaks_a_relayed_reply() -> None:
    # The ledger (on with the dashboard) reads the model after the reply is relayed: a
    # lone surrogate in its store key raised there, and the caller's reply lost its end.
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(upstream, ADMIN_TOKEN=ADMIN_TOKEN) as proxy:
        body = b'{"model":"m' + LONE + b'","messages":[]}'
        with httpx.Client(timeout=10) as client:
            reply = client.post(
                f"{proxy.url}/v1/chat/completions",
                content=body,
                headers={**AUTH, "content-type": "application/json"},
            )
            assert reply.status_code == 200
            assert reply.json()["id"] == "c"  # whole: the chunked body ended cleanly
            # The server is fine afterwards.
            assert client.get(f"{proxy.url}/v1/models", headers=AUTH).status_code == 200


MINT = (
    b'{"session":{"type":"realtime","model":"m","audio":{"input":'
    b'{"transcription":{"model":"m' + LONE + b'"}}}}}'
)


@pytest.mark.parametrize(
    ("path", "headers", "body", "shape"),
    [
        ("/v1/chat/completions", AUTH, b'{"model":"m' + LONE + b'"}', "openai"),
        (
            "/anthropic/v1/messages",
            {"x-api-key": FAKE_TOKEN},
            b'{"model":"m' + LONE + b'","messages":[]}',
            "anthropic",
        ),
        # A realtime key's transcription model runs beside its session's (other_models).
        ("/v1/realtime/client_secrets", AUTH, MINT, "openai"),
    ],
)
def test_a_rule_that_reads_the_model_refuses_one_that_is_not_unicode(
    path: str, headers: dict[str, str], body: bytes, shape: str
) -> None:
    upstream = ScriptedUpstream(models_or(_ok))
    with metered(
        upstream, ALLOWED_MODELS="m*", ALLOW_EPHEMERAL_KEYS="true", ADMIN_TOKEN=ADMIN_TOKEN
    ) as proxy:
        reply = httpx.post(
            f"{proxy.url}{path}",
            content=body,
            headers={**headers, "content-type": "application/json"},
            timeout=10,
        )
    assert reply.status_code == 400, reply.text
    document = reply.json()
    assert "not Unicode" in document["error"]["message"]
    if shape == "anthropic":
        assert document["type"] == "error"
        assert document["error"]["type"] == "invalid_request_error"
    else:
        assert document["error"]["code"] == "invalid_text"
    assert upstream.seen == []
