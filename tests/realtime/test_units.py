"""The small parts: expiry caps, session meters, close codes, settings."""

from __future__ import annotations

import datetime
import json

import pytest

from core.config import ConfigError, load_settings
from core.protocols import WIRES, Usage
from core.realtime.minting import (
    cap_gemini_token,
    cap_openai_client_secret,
    cap_openai_session_secret,
)
from core.realtime.session import reason, sendable
from core.realtime.wire import GeminiLiveMeter, OpenAIRealtimeMeter, split_browser_key
from tests.support.servers import proxy_env

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def test_openai_expiry_is_inserted_or_capped_in_every_spelling() -> None:
    document = {"session": {"model": "gpt-realtime"}}
    cap_openai_client_secret(document)
    assert document["expires_after"] == {"anchor": "created_at", "seconds": 600}
    sneaky = {"expires_after": {"seconds": 60}, "expiresAfter": {"seconds": 7200}}
    cap_openai_client_secret(sneaky)
    assert sneaky == {"expires_after": {"anchor": "created_at", "seconds": 600}}
    short = {"expires_after": {"anchor": "created_at", "seconds": 120}}
    cap_openai_client_secret(short)
    assert short["expires_after"]["seconds"] == 120
    odd = {"expires_after": {"seconds": "7200"}}
    cap_openai_client_secret(odd)
    assert odd["expires_after"]["seconds"] == 600


def test_beta_session_secret_is_capped_only_when_given() -> None:
    plain = {"model": "gpt-realtime"}
    cap_openai_session_secret(plain)
    assert plain == {"model": "gpt-realtime"}  # the default is one minute
    asked = {"model": "x", "client_secret": {"expires_after": {"seconds": 7200}}}
    cap_openai_session_secret(asked)
    assert asked["client_secret"]["expires_after"]["seconds"] == 600


def test_gemini_times_and_uses() -> None:
    document = {
        "expire_time": "2026-11-30T14:00:00.123456789Z",
        "newSessionExpireTime": "2026-11-30T12:01:00Z",
        "uses": 0,
    }
    cap_gemini_token(document, NOW)
    assert document == {
        "expireTime": "2026-11-30T12:10:00Z",
        "newSessionExpireTime": "2026-11-30T12:01:00Z",
        "uses": 1,
    }
    empty: dict[str, object] = {}
    cap_gemini_token(empty, NOW)
    assert empty == {"expireTime": "2026-11-30T12:10:00Z", "uses": 1}
    garbage = {"expireTime": "next year", "newSessionExpireTime": 5}
    cap_gemini_token(garbage, NOW)
    assert garbage["expireTime"] == garbage["newSessionExpireTime"] == "2026-11-30T12:10:00Z"


def test_minting_routes_name_their_model() -> None:
    openai, gemini = WIRES["openai"], WIRES["gemini"]
    route = openai.route("POST", "/v1/realtime/client_secrets")
    assert route.kind == "minting"
    assert openai.model_in(route, {"session": {"model": "gpt-realtime"}}) == "gpt-realtime"
    assert openai.model_in(route, {"session": {"type": "transcription"}}) is None
    beta = openai.route("POST", "/v1/realtime/sessions")
    assert openai.model_in(beta, {"model": "gpt-4o-realtime"}) == "gpt-4o-realtime"
    tokens = gemini.route("POST", "/v1alpha/auth_tokens")
    assert tokens.kind == "minting"
    flat = {"bidiGenerateContentSetup": {"model": "models/gemini-live"}}
    nested = {"bidiGenerateContentSetup": {"setup": {"model": "models/gemini-live"}}}
    assert gemini.model_in(tokens, flat) == gemini.model_in(tokens, nested) == "models/gemini-live"


def test_openai_meter_sums_response_done_only() -> None:
    meter = OpenAIRealtimeMeter()
    usage = {"input_tokens": 10, "output_tokens": 4, "input_token_details": {"cached_tokens": 3}}
    done = json.dumps({"type": "response.done", "response": {"usage": usage}})
    meter.feed(done)
    meter.feed(done.encode())
    meter.feed('{"type":"response.audio.delta","delta":"AAAA"}')
    meter.feed('not json with "response.done" inside')
    assert meter.finish() == Usage(20, 8, 6)


def test_gemini_meter_counts_each_turn_once() -> None:
    meter = GeminiLiveMeter()
    for figures in (
        {"promptTokenCount": 5, "responseTokenCount": 1},
        {"promptTokenCount": 5, "responseTokenCount": 3},
    ):
        meter.feed(json.dumps({"usageMetadata": figures}).encode())
    meter.feed(b'{"serverContent":{"turnComplete":true}}')
    meter.feed(
        b'{"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2,"thoughtsTokenCount":1}}'
    )
    assert meter.finish() == Usage(5 + 9, 3 + 3, 0)


def test_close_codes_and_reasons_fit_a_close_frame() -> None:
    assert [sendable(code) for code in (None, 1000, 1005, 1006, 1011, 4001, 999, 1015)] == [
        1000,
        1000,
        1000,
        1011,
        1011,
        4001,
        1011,
        1011,
    ]
    assert len(reason("é" * 200).encode()) <= 123


def test_browser_key_subprotocol_is_split_off() -> None:
    assert split_browser_key(["realtime", "openai-insecure-api-key.tok", "openai-beta.x"]) == (
        "tok",
        ["realtime", "openai-beta.x"],
    )


def test_realtime_settings_are_validated() -> None:
    settings = load_settings(proxy_env("http://127.0.0.1:9"))
    assert (settings.allow_ephemeral_keys, settings.realtime_max_seconds) == (False, 1800.0)
    with pytest.raises(ConfigError) as bad:
        load_settings(
            proxy_env(
                "http://127.0.0.1:9",
                ALLOW_EPHEMERAL_KEYS="maybe",
                REALTIME_MAX_SECONDS="0",
                EPHEMERAL_KEY_TOKENS="lots",
            )
        )
    text = " ".join(bad.value.problems)
    for name in ("ALLOW_EPHEMERAL_KEYS", "REALTIME_MAX_SECONDS", "EPHEMERAL_KEY_TOKENS"):
        assert name in text


def test_a_meter_knows_a_response_was_under_way_when_the_session_ended() -> None:
    openai = OpenAIRealtimeMeter()
    assert not openai.cut_short()
    openai.feed(json.dumps({"type": "response.created", "response": {"id": "r"}}))
    openai.feed(json.dumps({"type": "response.audio.delta", "delta": "AAAA"}))
    assert openai.cut_short()
    usage = {"input_tokens": 5, "output_tokens": 7}
    openai.feed(json.dumps({"type": "response.done", "response": {"usage": usage}}))
    assert not openai.cut_short() and openai.finish() == Usage(5, 7)
    # A transcript quoting an event name is not an event.
    openai.feed(json.dumps({"type": "response.text.delta", "delta": '"response.created"'}))
    assert not openai.cut_short()

    gemini = GeminiLiveMeter()
    assert not gemini.cut_short()
    gemini.feed(json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "Hi"}]}}}))
    assert gemini.cut_short()
    gemini.feed(json.dumps({"serverContent": {"turnComplete": True}}))
    assert not gemini.cut_short()
    gemini.feed(json.dumps({"usageMetadata": {"promptTokenCount": 3}}).encode())
    assert gemini.cut_short()  # usage of a turn not yet complete


def test_a_meter_counts_the_responses_whose_usage_it_could_not_read() -> None:
    openai = OpenAIRealtimeMeter()
    usage = {"input_tokens": 5, "output_tokens": 7}
    openai.feed(json.dumps({"type": "response.done", "response": {"usage": usage}}))
    assert openai.unread_turns() == 0
    openai.feed(json.dumps({"type": "response.done", "response": {"status": "completed"}}))
    openai.feed(json.dumps({"type": "response.done", "response": {"usage": None}}))
    assert openai.unread_turns() == 2 and openai.finish() == Usage(5, 7)

    gemini = GeminiLiveMeter()
    answer = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "Hi"}]}}})
    complete = json.dumps({"serverContent": {"turnComplete": True}})
    gemini.feed(answer)
    gemini.feed(json.dumps({"usageMetadata": {"promptTokenCount": 3}}))
    gemini.feed(complete)
    assert gemini.unread_turns() == 0
    gemini.feed(complete)  # no answer, nothing to charge
    assert gemini.unread_turns() == 0
    gemini.feed(answer)
    gemini.feed(complete)  # an answer whose cost was never said
    assert gemini.unread_turns() == 1


def test_a_meter_counts_the_responses_the_provider_began() -> None:
    openai = OpenAIRealtimeMeter()
    for _ in range(2):
        openai.feed(json.dumps({"type": "response.created", "response": {"id": "r"}}))
        openai.feed(json.dumps({"type": "response.done", "response": {"usage": {}}}))
    assert openai.responses_begun() == 2

    gemini = GeminiLiveMeter()
    answer = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "Hi"}]}}})
    for _ in range(2):
        gemini.feed(answer)
        gemini.feed(answer)  # the same turn's next chunk
        gemini.feed(json.dumps({"serverContent": {"turnComplete": True}}))
    assert gemini.responses_begun() == 2


def test_the_openai_meter_counts_input_transcriptions_billed_apart() -> None:
    meter = OpenAIRealtimeMeter()
    tokens = {
        "type": "tokens",
        "input_tokens": 14,
        "output_tokens": 6,
        "total_tokens": 20,
        "input_token_details": {"audio_tokens": 14, "text_tokens": 0},
    }
    event = "conversation.item.input_audio_transcription.completed"
    meter.feed(json.dumps({"type": event, "item_id": "i", "transcript": "hi", "usage": tokens}))
    # whisper-1 reports seconds, not tokens: not counted as tokens.
    seconds = {"type": "duration", "seconds": 3.2}
    meter.feed(json.dumps({"type": event, "item_id": "j", "transcript": "x", "usage": seconds}))
    usage = {"input_tokens": 5, "output_tokens": 7}
    meter.feed(json.dumps({"type": "response.done", "response": {"usage": usage}}))
    # The transcription's audio stays audio: priced at the audio rate, never as text.
    assert meter.finish() == Usage(19, 13, 0, 0, 0, 14, 0)


def test_realtime_meters_keep_the_audio_tokens_apart() -> None:
    """Realtime audio bills at many times the text rate (gpt-realtime: $32 / $64 per 1M
    audio tokens, $4 / $16 text): the meters hand the audio parts to the price."""
    openai = OpenAIRealtimeMeter()
    usage = {
        "input_tokens": 100,
        "output_tokens": 50,
        "input_token_details": {"audio_tokens": 80, "text_tokens": 20},
        "output_token_details": {"audio_tokens": 40, "text_tokens": 10},
    }
    openai.feed(json.dumps({"type": "response.done", "response": {"usage": usage}}))
    assert openai.finish() == Usage(100, 50, 0, 0, 0, 80, 40)
    gemini = GeminiLiveMeter()
    audio = [{"modality": "AUDIO", "tokenCount": 7}, {"modality": "TEXT", "tokenCount": 2}]
    figures = {
        "promptTokenCount": 9,
        "responseTokenCount": 5,
        "promptTokensDetails": audio,
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}],
    }
    gemini.feed(json.dumps({"usageMetadata": figures}))
    assert gemini.finish() == Usage(9, 5, 0, 0, 0, 7, 5)
