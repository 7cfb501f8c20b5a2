"""Anthropic's Messages API (thinking, tool use, streamed events) and count_tokens."""

from __future__ import annotations

from typing import Any

from core.devtools.mock_upstream.content import (
    Usage,
    example_input,
    prompt_tokens,
    reply_text,
    split_text,
    usage_for,
    word,
)
from core.devtools.mock_upstream.framing import Reply, dumps, sse
from core.devtools.mock_upstream.knobs import Knobs


def _anthropic_usage(usage: Usage, output: int, delta: bool = False) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "input_tokens": usage.prompt - usage.cached - usage.cache_write,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": output,
    }
    if not delta:
        counts["service_tier"] = "standard"
    return counts


def _chosen_tool(request: dict[str, Any]) -> dict[str, Any] | None:
    """The client tool a request with `tools` gets called: the one tool_choice names, else
    the first; none when tool_choice is none."""
    choice = request.get("tool_choice") or {}
    if not isinstance(choice, dict) or choice.get("type") == "none":
        return None
    tools = [
        tool
        for tool in request.get("tools") or []
        if isinstance(tool, dict) and isinstance(tool.get("input_schema"), dict)
    ]
    for tool in tools:
        if choice.get("type") == "tool" and tool.get("name") == choice.get("name"):
            return tool
    return tools[0] if tools else None


def _anthropic_message(
    request: dict[str, Any], content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "mock-model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _anthropic_thinking(request: dict[str, Any]) -> bool:
    thinking = request.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


_SIGNATURE = "bW9jay1zaWduYXR1cmU="


async def messages(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    thinking = _anthropic_thinking(request)
    usage = usage_for(request, knobs, knobs.chunks, thinking)
    tool = _chosen_tool(request)
    stop = "tool_use" if tool else "end_turn"
    # Each content block: (its whole form, its form in content_block_start, its deltas).
    blocks: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
    if thinking:
        whole: dict[str, Any] = {
            "type": "thinking",
            "thinking": reply_text(knobs.chunks),
            "signature": _SIGNATURE,
        }
        deltas = [{"type": "thinking_delta", "thinking": word(i)} for i in range(knobs.chunks)]
        deltas.append({"type": "signature_delta", "signature": _SIGNATURE})
        blocks.append((whole, {**whole, "thinking": "", "signature": ""}, deltas))
    if tool:
        tool_input = example_input(tool["input_schema"])
        whole = {"type": "tool_use", "id": "toolu_mock", "name": tool["name"], "input": tool_input}
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in split_text(dumps(tool_input).decode(), knobs.chunks)
        ]
        blocks.append((whole, {**whole, "input": {}}, deltas))
    else:
        whole = {"type": "text", "text": reply_text(knobs.chunks)}
        deltas = [{"type": "text_delta", "text": word(i)} for i in range(knobs.chunks)]
        blocks.append((whole, {**whole, "text": ""}, deltas))
    # Output tokens include thinking, as Anthropic counts them.
    output = usage.completion
    if not request.get("stream"):
        await reply.generating()
        content = [whole for whole, _, _ in blocks]
        usage_json = _anthropic_usage(usage, output)
        await reply.json(200, _anthropic_message(request, content, stop, usage_json))
        return
    start = _anthropic_message(request, [], None, _anthropic_usage(usage, 1 * knobs.scale))
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    for index, (_, opening, deltas) in enumerate(blocks):
        events.append(
            sse(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
        )
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        events += [
            sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
            for delta in deltas
        ]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events += [
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                # Running totals, as the API sends them now: the final counts, not increments.
                "usage": _anthropic_usage(usage, output, delta=True),
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    await reply.stream(events)


async def count_tokens(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    await reply.json(200, {"input_tokens": prompt_tokens(request) * knobs.scale})
