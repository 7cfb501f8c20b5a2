"""The real openai SDK through the proxy over real sockets, streaming and not."""

from __future__ import annotations

import itertools
import time

import httpx
import openai
import pytest

from tests.support.servers import (
    FAKE_TOKEN,
    FAKE_UPSTREAM_KEY,
    OTHER_TOKEN,
    RunningServer,
    reset_upstream,
    upstream_requests,
)


def client(proxy: RunningServer, token: str = FAKE_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=token, max_retries=0, timeout=20)


def test_chat_completion_reaches_upstream_with_real_key(
    proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    reply = client(proxy).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from the mock upstream, streamed token"
    [seen] = upstream_requests(mock_upstream)
    assert seen["path"] == "/v1/chat/completions"
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {FAKE_UPSTREAM_KEY}"
    assert FAKE_TOKEN not in str(headers)


def test_streaming_chat_yields_every_token(proxy: RunningServer) -> None:
    stream = client(proxy).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-chunks": "30"},
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 30


def test_stream_chunks_arrive_spaced_as_the_upstream_sends_them(proxy: RunningServer) -> None:
    """20 chunks 50 ms apart must arrive about 50 ms apart, not all at the end."""
    stream = client(proxy).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-chunks": "20", "x-mock-delay-ms": "50"},
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 20
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Buffering would put most gaps near zero and the whole wait before the first chunk.
    assert sorted(gaps)[len(gaps) // 2] > 0.03
    assert arrivals[-1] - arrivals[0] > 0.6


def test_rotated_token_is_accepted(proxy: RunningServer) -> None:
    models = client(proxy, OTHER_TOKEN).models.list()
    assert [m.id for m in models.data] == ["mock-model"]


def test_wrong_token_raises_the_sdks_authentication_error(proxy: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(proxy, "not-the-token-at-all-000").models.list()
    assert "not valid" in str(caught.value)


def test_upstream_error_status_and_body_pass_through(proxy: RunningServer) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(proxy).chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "500"},
        )
    assert caught.value.status_code == 500
    assert "mock error 500" in str(caught.value)


def test_upstream_rate_limit_reaches_sdk_as_rate_limit_error(proxy: RunningServer) -> None:
    with pytest.raises(openai.RateLimitError):
        client(proxy).models.list(extra_headers={"x-mock-status": "429"})


def test_embeddings_and_models(proxy: RunningServer) -> None:
    sdk = client(proxy)
    # The SDK asks for base64 float32, as the real API sends it: approximately these values.
    embedding = sdk.embeddings.create(model="e", input="x").data[0].embedding
    assert embedding == pytest.approx([0.1, 0.2, 0.3])


def test_multipart_audio_upload_passes_byte_for_byte(
    proxy: RunningServer, mock_upstream: RunningServer
) -> None:
    reset_upstream(mock_upstream)
    audio = bytes(range(256)) * 400
    response = httpx.post(
        f"{proxy.url}/v1/echo/audio/transcriptions?x=1&y=%20two",
        headers={"Authorization": f"Bearer {FAKE_TOKEN}"},
        files={"file": ("a.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["query"] == "x=1&y=%20two"
    [seen] = upstream_requests(mock_upstream)
    assert seen["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert echoed["body_length"] == int(seen["headers"]["content-length"])
