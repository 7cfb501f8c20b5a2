"""OpenAI's wire formats: chat completions, legacy completions, the Responses API (with
input_tokens and compact), embeddings and models. Audio is in audio.py."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from core.devtools.mock_upstream.content import (
    Usage,
    example_input,
    is_int,
    mock_vector,
    prompt_tokens,
    reply_text,
    split_text,
    usage_for,
    word,
)
from core.devtools.mock_upstream.framing import Reply, dumps, sse
from core.devtools.mock_upstream.knobs import Knobs


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _wants_obfuscation(request: dict[str, Any]) -> bool:
    """OpenAI pads streamed deltas with an `obfuscation` string unless asked not to."""
    options = request.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_obfuscation") is False)


_PAD = "mK3xQ9vL2pR7tW4zB8nF6hJ1"


def _obfuscation(index: int) -> str:
    """Deterministic stand-in for OpenAI's random padding (1 to 16 characters)."""
    return _PAD[index % 8 : index % 8 + 1 + (7 * index) % 16]


def _chat_reasoning(request: dict[str, Any]) -> bool:
    return request.get("reasoning_effort") not in (None, "none")


def _openai_tool(request: dict[str, Any], responses: bool) -> tuple[str, str] | None:
    """The function a request with `tools` gets called, and its arguments as JSON: the one
    tool_choice names, else the first; none when tool_choice is "none". Chat nests each
    function under "function"; the Responses API does not."""
    choice = request.get("tool_choice")
    if choice == "none":
        return None
    named = None
    if isinstance(choice, dict):
        named = choice.get("name") if responses else (choice.get("function") or {}).get("name")
    functions = []
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        function = tool if responses else tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions.append(function)
    for function in functions:
        if named is None or function["name"] == named:
            schema = function.get("parameters")
            arguments = example_input(schema if isinstance(schema, dict) else {})
            return function["name"], dumps(arguments).decode()
    return None


def chat_stream(request: dict[str, Any], knobs: Knobs) -> list[bytes]:
    """The SSE events of a streamed chat reply, as `chat` sends them (and the streams
    bench's lean upstream, bench/sse_upstream.py, byte for byte)."""
    usage = usage_for(request, knobs, knobs.chunks, _chat_reasoning(request))
    return _chat_events(request, knobs.chunks, usage, _openai_tool(request, responses=False))


async def chat(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    if request.get("stream"):
        await reply.stream(chat_stream(request, knobs))
        return
    usage = usage_for(request, knobs, knobs.chunks, _chat_reasoning(request))
    tool = _openai_tool(request, responses=False)
    await reply.generating()
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply_text(knobs.chunks),
        "refusal": None,
        "annotations": [],
    }
    if tool:
        call = {"id": "call_mock", "type": "function"}
        message["content"] = None
        message["tool_calls"] = [{**call, "function": {"name": tool[0], "arguments": tool[1]}}]
    await reply.json(
        200,
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "mock-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool else "stop",
                }
            ],
            "usage": _openai_usage(usage),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        },
    )


def _chat_events(
    request: dict[str, Any], chunks: int, usage: Usage, tool: tuple[str, str] | None
) -> list[bytes]:
    base: dict[str, Any] = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model", "mock-model"),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    with_usage = _wants_usage(request)
    padded = _wants_obfuscation(request)
    events: list[bytes] = []

    def chunk(choices: list[dict[str, Any]], usage_json: dict[str, Any] | None = None) -> None:
        event: dict[str, Any] = {**base, "choices": choices}
        if with_usage:
            # As the real API: every chunk carries usage, null until the last.
            event["usage"] = usage_json
        if padded:
            event["obfuscation"] = _obfuscation(len(events))
        events.append(sse(event))

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    if tool:
        name, arguments = tool
        call = {"index": 0, "id": "call_mock", "type": "function"}
        first = {**call, "function": {"name": name, "arguments": ""}}
        chunk(choice({"role": "assistant", "content": None, "tool_calls": [first]}))
        for piece in split_text(arguments, chunks):
            chunk(choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        chunk(choice({}, "tool_calls"))
    else:
        chunk(choice({"role": "assistant", "content": "", "refusal": None}))
        for i in range(chunks):
            chunk(choice({"content": word(i)}))
        chunk(choice({}, "stop"))
    if with_usage:
        chunk([], _openai_usage(usage))
    events.append(b"data: [DONE]\n\n")
    return events


async def completions(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    """The legacy text completions API."""
    usage = usage_for(request, knobs, knobs.chunks)
    base: dict[str, Any] = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.get("model", "mock-model"),
        "system_fingerprint": "fp_mock",
    }
    if not request.get("stream"):
        await reply.generating()
        whole = {
            "text": reply_text(knobs.chunks),
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
        }
        await reply.json(200, {**base, "choices": [whole], "usage": _openai_usage(usage)})
        return
    with_usage = _wants_usage(request)
    padded = _wants_obfuscation(request)
    events: list[bytes] = []

    def chunk(choices: list[dict[str, Any]], usage_json: dict[str, Any] | None = None) -> None:
        event: dict[str, Any] = {**base, "choices": choices}
        if with_usage:
            event["usage"] = usage_json
        if padded:
            event["obfuscation"] = _obfuscation(len(events))
        events.append(sse(event))

    def choice(text: str, finish: str | None = None) -> list[dict[str, Any]]:
        return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

    for i in range(knobs.chunks):
        chunk(choice(word(i)))
    chunk(choice("", "stop"))
    if with_usage:
        chunk([], _openai_usage(usage))
    events.append(b"data: [DONE]\n\n")
    await reply.stream(events)


def _responses_reasoning(request: dict[str, Any]) -> bool:
    reasoning = request.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("effort") != "none"


def _response_object(
    request: dict[str, Any], status: str, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    reasoning = request.get("reasoning")
    if not isinstance(reasoning, dict):
        reasoning = {}
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request.get("model", "mock-model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(request.get("text") or {})},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.prompt,
            "input_tokens_details": {"cached_tokens": usage.cached},
            "output_tokens": usage.completion,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.total,
        },
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


_REASONING_ITEM = {"id": "rs_mock", "type": "reasoning", "summary": []}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _function_call_item(status: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": "fc_mock",
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": "call_mock",
        "name": name,
    }


async def responses(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    reasoning = _responses_reasoning(request)
    usage = usage_for(request, knobs, knobs.chunks, reasoning)
    text = reply_text(knobs.chunks)
    tool = _openai_tool(request, responses=True)
    output = [_REASONING_ITEM] if reasoning else []
    if tool:
        output.append(_function_call_item("completed", *tool))
    else:
        output.append(_message_item("completed", [_output_text(text)]))
    if not request.get("stream"):
        await reply.generating()
        await reply.json(200, _response_object(request, "completed", output, usage))
        return
    events: list[tuple[str, dict[str, Any]]] = []
    started = _response_object(request, "in_progress", [], None)
    events.append(("response.created", {"response": started}))
    events.append(("response.in_progress", {"response": started}))
    index = 0
    if reasoning:
        item = {"output_index": 0, "item": _REASONING_ITEM}
        events.append(("response.output_item.added", item))
        events.append(("response.output_item.done", item))
        index = 1
    padded = _wants_obfuscation(request)
    if tool:
        name, arguments = tool
        at = {"item_id": "fc_mock", "output_index": index}
        started_item = _function_call_item("in_progress", name, "")
        events.append(("response.output_item.added", {"output_index": index, "item": started_item}))
        for i, piece in enumerate(split_text(arguments, knobs.chunks)):
            delta = {**at, "delta": piece}
            if padded:
                delta["obfuscation"] = _obfuscation(i)
            events.append(("response.function_call_arguments.delta", delta))
        events.append(("response.function_call_arguments.done", {**at, "arguments": arguments}))
    else:
        _message_events(events, index, text, knobs.chunks, padded)
    events.append(("response.output_item.done", {"output_index": index, "item": output[-1]}))
    final = _response_object(request, "completed", output, usage)
    events.append(("response.completed", {"response": final}))
    await reply.stream(
        [
            sse({"type": name, "sequence_number": number, **data}, name)
            for number, (name, data) in enumerate(events)
        ]
    )


async def responses_compact(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    """`POST /responses/compact`: the model reads the conversation and answers with one
    opaque compaction item, billed as a response is (never streamed)."""
    usage = usage_for(request, knobs, knobs.chunks)
    await reply.generating()
    await reply.json(
        200,
        {
            "id": "cmp_mock",
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [
                {
                    "id": "cmp_item_mock",
                    "type": "compaction",
                    "encrypted_content": base64.b64encode(
                        reply_text(knobs.chunks).encode()
                    ).decode(),
                }
            ],
            "usage": {
                "input_tokens": usage.prompt,
                "input_tokens_details": {"cached_tokens": usage.cached},
                "output_tokens": usage.completion,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                "total_tokens": usage.total,
            },
        },
    )


async def responses_input_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    tokens = prompt_tokens(request) * knobs.scale
    await reply.json(200, {"object": "response.input_tokens", "input_tokens": tokens})


def _message_events(
    events: list[tuple[str, dict[str, Any]]], index: int, text: str, chunks: int, padded: bool
) -> None:
    """The events of one streamed message item, up to (not including) its output_item.done."""
    where = {"item_id": "msg_mock", "output_index": index, "content_index": 0}
    events.append(
        (
            "response.output_item.added",
            {"output_index": index, "item": _message_item("in_progress", [])},
        )
    )
    events.append(("response.content_part.added", {**where, "part": _output_text("")}))
    for i in range(chunks):
        delta = {**where, "delta": word(i), "logprobs": []}
        if padded:
            delta["obfuscation"] = _obfuscation(i)
        events.append(("response.output_text.delta", delta))
    events.append(("response.output_text.done", {**where, "text": text, "logprobs": []}))
    events.append(("response.content_part.done", {**where, "part": _output_text(text)}))


async def embeddings(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    raw = request.get("input", "")
    # One string, a list of strings, one list of token ids, or a list of those.
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(map(is_int, raw))):
        inputs: list[Any] = [raw]
    else:
        inputs = raw if isinstance(raw, list) else [raw]
    dimensions = request.get("dimensions") or 3
    data = []
    for index, _ in enumerate(inputs):
        vector = mock_vector(dimensions, index)
        embedding: Any = vector
        if request.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = prompt_tokens({"input": raw}) * knobs.scale
    await reply.json(
        200,
        {
            "object": "list",
            "data": data,
            "model": request.get("model", "mock-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


async def models(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    model = {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}
    await reply.json(200, {"object": "list", "data": [model]})
