"""Gemini's generateContent and streamGenerateContent (a JSON array, or SSE with
`alt=sse`), countTokens, embedContent and batchEmbedContents."""

from __future__ import annotations

from typing import Any

from core.devtools.mock_upstream.content import (
    Usage,
    example_input,
    is_int,
    mock_vector,
    prompt_tokens,
    reply_text,
    usage_for,
    word,
)
from core.devtools.mock_upstream.framing import GEMINI_JSON, Reply, gemini_dumps, sse
from core.devtools.mock_upstream.knobs import Knobs


def _gemini_thinking(request: dict[str, Any]) -> bool:
    config = _either(request, "generationConfig", "generation_config")
    thinking = _either(config, "thinkingConfig", "thinking_config")
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    return bool(
        thinking.get("includeThoughts")
        or thinking.get("include_thoughts")
        or thinking.get("thinkingLevel")
        or thinking.get("thinking_level")
        or (is_int(budget) and budget != 0)
    )


def _gemini_usage(usage: Usage, candidates: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": usage.prompt + candidates + usage.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}],
    }
    if usage.reasoning:
        metadata["thoughtsTokenCount"] = usage.reasoning
    if usage.cached:
        metadata["cachedContentTokenCount"] = usage.cached
    return metadata


def _either(value: Any, camel: str, snake: str) -> dict[str, Any]:
    """value[camel] or value[snake] when it is an object, else {}."""
    if not isinstance(value, dict):
        return {}
    found = value.get(camel, value.get(snake))
    return found if isinstance(found, dict) else {}


def _gemini_function(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function a request with functionDeclarations gets called (the first allowed),
    as a functionCall part; none when function calling is off (mode NONE)."""
    # Google's JSON accepts camelCase and snake_case names alike; the SDKs send both.
    config = _either(request, "toolConfig", "tool_config")
    calling = _either(config, "functionCallingConfig", "function_calling_config")
    if calling.get("mode") == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames") or calling.get("allowed_function_names")
    for tool in request.get("tools") or []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for function in declarations or []:
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                continue
            if allowed and function["name"] not in allowed:
                continue
            schema = (
                function.get("parametersJsonSchema")
                or function.get("parameters_json_schema")
                or function.get("parameters")
                or {}
            )
            arguments = example_input(schema if isinstance(schema, dict) else {})
            return {"functionCall": {"name": function["name"], "args": arguments}}
    return None


def _gemini_response(
    request: dict[str, Any],
    text: str,
    finished: bool,
    metadata: dict[str, Any],
    part: dict[str, Any] | None = None,
    reason: str = "STOP",
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [part or {"text": text}]},
        "index": 0,
    }
    if finished:
        candidate["finishReason"] = reason
    return {
        "candidates": [candidate],
        "usageMetadata": metadata,
        "modelVersion": "mock-model",
        "responseId": "mock-response",
    }


async def generate_content(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    usage = usage_for(request, knobs, knobs.chunks, _gemini_thinking(request))
    await reply.generating()
    metadata = _gemini_usage(usage, usage.output)
    part = _gemini_function(request)
    payload = _gemini_response(request, reply_text(knobs.chunks), True, metadata, part)
    await reply.json(200, payload, gemini=True)


def _words_written(request: dict[str, Any]) -> int:
    """How many of the reply's words the request's model turn already holds, when it asks
    to continue (a model turn, then a user turn, last)."""
    contents = request.get("contents")
    if not isinstance(contents, list) or len(contents) < 2:
        return 0
    model = contents[-2]
    if not isinstance(model, dict) or model.get("role") != "model":
        return 0
    text = "".join(
        part.get("text", "") for part in model.get("parts") or [] if isinstance(part, dict)
    )
    count = 0
    while text.startswith(word(count)):
        text = text[len(word(count)) :]
        count += 1
    return count


def _output_cap(request: dict[str, Any]) -> int | None:
    """generationConfig.maxOutputTokens (either spelling), when it is a whole number."""
    config = _either(request, "generationConfig", "generation_config")
    cap = config.get("maxOutputTokens", config.get("max_output_tokens"))
    return cap if is_int(cap) else None


async def stream_generate_content(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    first = min(_words_written(request), knobs.chunks) if knobs.resume else 0
    end = knobs.chunks
    reason = "STOP"
    cap = _output_cap(request)
    if cap is not None and first + max(1, cap // knobs.scale) < end:
        # As Gemini does, the stream stops at maxOutputTokens (each word is `scale` tokens).
        end = first + max(1, cap // knobs.scale)
        reason = "MAX_TOKENS"
    usage = usage_for(request, knobs, end - first, _gemini_thinking(request))
    chunks = [
        _gemini_response(
            request,
            word(i),
            i == end - 1,
            _gemini_usage(usage, (i + 1 - first) * knobs.scale),  # candidates so far
            reason=reason,
        )
        for i in range(first, end)
    ]
    function = _gemini_function(request)
    if function:
        # Gemini sends a function call whole, in one chunk.
        metadata = _gemini_usage(usage, usage.output)
        chunks = [_gemini_response(request, "", True, metadata, function)]
    if knobs.sse:
        await reply.stream([sse(chunk) for chunk in chunks])
        return
    # Without alt=sse: one JSON array, written element by element as the real API does.
    pieces = [
        (b"[" if i == 0 else b"\r\n,") + gemini_dumps(chunk) for i, chunk in enumerate(chunks)
    ]
    pieces.append(b"\r\n]" if chunks else b"[]")
    await reply.stream(pieces, GEMINI_JSON)


async def count_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    tokens = prompt_tokens(request) * knobs.scale
    details = [{"modality": "TEXT", "tokenCount": tokens}]
    await reply.json(200, {"totalTokens": tokens, "promptTokensDetails": details}, gemini=True)


def _gemini_vector(request: dict[str, Any], seed: int) -> dict[str, Any]:
    dimensions = request.get("outputDimensionality") or 3
    return {"values": mock_vector(dimensions, seed)}


async def embed_content(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    await reply.json(200, {"embedding": _gemini_vector(request, 0)}, gemini=True)


async def batch_embed_contents(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    requests = [r for r in request.get("requests") or [] if isinstance(r, dict)]
    embeddings = [_gemini_vector(r, index) for index, r in enumerate(requests)]
    await reply.json(200, {"embeddings": embeddings}, gemini=True)
