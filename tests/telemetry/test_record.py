"""The GenAI names a request record derives: operation, provider, reply-length cap, and the
metric model label a caller cannot inflate."""

from __future__ import annotations

import pytest

from core.telemetry.record import RequestRecord, max_tokens_of, operation_name
from core.types import RequestLog


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/v1/chat/completions", "chat"),
        ("/openai/v1/responses", "chat"),
        ("/anthropic/v1/messages", "chat"),
        ("/v1/completions", "text_completion"),
        ("/v1/embeddings", "embeddings"),
        ("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent", "generate_content"),
        ("/gemini/v1beta/models/gemini-2.0-flash:generateContent", "generate_content"),
        ("/gemini/v1beta/models/text-embedding-004:embedContent", "embeddings"),
        ("/gemini/v1beta/models/gemini-2.0-flash:countTokens", "countTokens"),
        ("/v1/models", "http"),
        # A label: a method the caller made up is not a new series.
        ("/gemini/v1beta/models/gemini-2.0-flash:madeUp1", "http"),
        ("/anything:COUNTTOKENS", "countTokens"),
    ],
)
def test_operation_names(path: str, operation: str) -> None:
    assert operation_name(path) == operation


def test_max_tokens_in_every_protocol() -> None:
    assert max_tokens_of({"max_tokens": 5}) == 5
    assert max_tokens_of({"max_completion_tokens": 6}) == 6
    assert max_tokens_of({"max_output_tokens": 7}) == 7
    assert max_tokens_of({"generationConfig": {"maxOutputTokens": 8}}) == 8
    assert max_tokens_of({"max_tokens": True}) is None
    assert max_tokens_of(None) is None


def test_metric_model_label_only_for_a_model_an_upstream_accepted() -> None:
    log = RequestLog(request_id="r", method="POST", path="/v1/chat/completions")
    log.route = "groq"
    record = RequestRecord(kind="http", method="POST", path=log.path, log=log)
    record.request_model, record.wire = "made-up-model-" + "x" * 300, "openai"
    assert record.model_label == ""  # not answered (refused, or the upstream never replied)
    log.upstream_status = 404
    assert record.model_label == ""
    log.upstream_status = 200
    assert record.model_label == record.request_model[:100]
    assert record.provider_name == "groq"  # a registered gen_ai.provider.name
    log.route = "my-vendor"
    assert record.provider_name == "openai"
