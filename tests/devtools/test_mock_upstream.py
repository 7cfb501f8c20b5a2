"""The mock upstream answers each route in the real provider's shape, with usage as
predicted: prompt tokens are the words of the request's text (at least 1), output tokens the
chunks (8 by default; `x-mock-chunks`). The real SDKs call it directly and parse every reply;
raw httpx calls check the bytes the SDKs do not show (compact JSON, event framing, gzip,
a cut stream, Gemini's JSON-array stream)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from core.devtools.mock_upstream import MockOptions, MockUpstream, count_words
from tests.support.servers import RunningServer, reset_upstream, serve_in_thread

KEY = "fake-mock-key-for-tests"
CHUNKS = 8  # the session mock's default
TEXT = "Hello from the mock upstream, streamed token"  # 8 chunks of one word
ONE_WORD: Any = [{"role": "user", "content": "hi"}]
THREE_WORDS: Any = [{"role": "user", "content": "tell me more"}]


@pytest.fixture
def mock(mock_upstream: RunningServer) -> RunningServer:
    reset_upstream(mock_upstream)
    return mock_upstream


def oai(mock: RunningServer, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{mock.url}/v1", api_key=KEY, max_retries=0, timeout=10, default_headers=headers
    )


def claude(mock: RunningServer, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=mock.url, api_key=KEY, max_retries=0, timeout=10, default_headers=headers
    )


def gemini(mock: RunningServer, **headers: str) -> genai.Client:
    options = genai_types.HttpOptions(base_url=mock.url, headers=headers or None, timeout=10_000)
    return genai.Client(api_key=KEY, http_options=options)


def post(mock: RunningServer, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{mock.url}{path}", json=body, headers=headers, timeout=10)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def test_prompt_tokens_are_the_words_of_the_request() -> None:
    assert count_words({"model": "x y", "messages": THREE_WORDS}) == 3
    assert count_words({"input": [{"role": "user", "content": [{"text": "a b"}]}]}) == 2
    assert count_words({"contents": [{"parts": [{"text": "a b c d"}]}]}) == 4
    assert count_words({"input": [[1, 2, 3]]}) == 3  # token ids count one each


# ---- OpenAI chat ------------------------------------------------------------------------


def test_chat_whole_reply_has_usage_and_compact_json(mock: RunningServer) -> None:
    reply = oai(mock).chat.completions.create(model="gpt-x", messages=THREE_WORDS)
    assert reply.choices[0].message.content == TEXT
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, CHUNKS)
    assert reply.usage.total_tokens == 3 + CHUNKS
    raw = post(mock, "/v1/chat/completions", {"model": "gpt-x", "messages": ONE_WORD})
    assert b": " not in raw.content and b", " not in raw.content.replace(b"upstream, ", b"")
    assert raw.headers["content-type"] == "application/json"


def test_chat_stream_with_include_usage_is_exact(mock: RunningServer) -> None:
    body = {
        "model": "gpt-x",
        "messages": THREE_WORDS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = post(mock, "/v1/chat/completions", body)
    events = sse_events(raw.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" in chunk for chunk in chunks)
    *content, last = chunks
    assert all(chunk["usage"] is None and len(chunk["choices"]) == 1 for chunk in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 3
    assert last["usage"]["completion_tokens"] == CHUNKS
    assert last["usage"]["total_tokens"] == 3 + CHUNKS
    assert b'"usage":null' in raw.content  # compact, as OpenAI writes it

    stream = oai(mock).chat.completions.create(
        model="gpt-x", messages=ONE_WORD, stream=True, stream_options={"include_usage": True}
    )
    parsed = list(stream)
    assert parsed[-1].usage is not None and parsed[-1].usage.total_tokens == 1 + CHUNKS


def test_chat_stream_without_include_usage_has_no_usage_key(mock: RunningServer) -> None:
    raw = post(mock, "/v1/chat/completions", {"messages": ONE_WORD, "stream": True})
    events = sse_events(raw.text)
    assert all("usage" not in json.loads(data) for _, data in events[:-1])
    assert len(events) == 1 + CHUNKS + 1 + 1  # role, words, finish, [DONE]


def test_openai_stream_deltas_carry_obfuscation_unless_declined(mock: RunningServer) -> None:
    raw = post(mock, "/v1/chat/completions", {"messages": ONE_WORD, "stream": True})
    chunks = [json.loads(data) for _, data in sse_events(raw.text)[:-1]]
    assert all(list(chunk)[-1] == "obfuscation" for chunk in chunks)  # last, as OpenAI's
    declined = {"stream": True, "stream_options": {"include_obfuscation": False}}
    for path, body in [
        ("/v1/chat/completions", {"messages": ONE_WORD, **declined}),
        ("/v1/completions", {"prompt": "hi", **declined}),
        ("/v1/responses", {"input": "hi", **declined}),
    ]:
        assert b"obfuscation" not in post(mock, path, body).content
    raw = post(mock, "/v1/responses", {"input": "hi", "stream": True})
    deltas = [
        json.loads(data)
        for name, data in sse_events(raw.text)
        if name == "response.output_text.delta"
    ]
    assert all(delta["obfuscation"] for delta in deltas)


# ---- OpenAI Responses API ---------------------------------------------------------------

RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * CHUNKS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_whole(mock: RunningServer) -> None:
    reply = oai(mock).responses.create(model="gpt-x", input="say three words")
    assert reply.status == "completed"
    assert reply.output_text == TEXT
    assert reply.usage is not None
    assert reply.usage.input_tokens == 3
    assert reply.usage.input_tokens_details.cached_tokens == 0
    assert reply.usage.output_tokens == CHUNKS
    assert reply.usage.output_tokens_details.reasoning_tokens == 0
    assert reply.usage.total_tokens == 3 + CHUNKS


def test_responses_stream_is_the_real_event_sequence(mock: RunningServer) -> None:
    with oai(mock).responses.stream(model="gpt-x", input=THREE_WORDS) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_response()
    assert names == RESPONSE_EVENTS
    assert final.output_text == TEXT
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, CHUNKS)

    raw = post(mock, "/v1/responses", {"model": "gpt-x", "input": "hi", "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.text)
    assert [name for name, _ in events] == RESPONSE_EVENTS
    payloads = [json.loads(data) for _, data in events]
    assert [p["type"] for p in payloads] == RESPONSE_EVENTS  # event: matches data's type
    assert [p["sequence_number"] for p in payloads] == list(range(len(events)))
    assert payloads[0]["response"]["usage"] is None
    assert payloads[-1]["response"]["usage"]["total_tokens"] == 1 + CHUNKS


def test_responses_input_tokens(mock: RunningServer) -> None:
    counted = oai(mock).responses.input_tokens.count(
        model="gpt-x", input="four words of input", instructions="be brief"
    )
    assert counted.input_tokens == 6


def test_responses_compact(mock: RunningServer) -> None:
    compacted = oai(mock).responses.compact(model="gpt-x", input="four words of input")
    assert compacted.object == "response.compaction"
    assert compacted.output[-1].type == "compaction"
    assert (compacted.usage.input_tokens, compacted.usage.output_tokens) == (4, CHUNKS)


def test_responses_reasoning_reports_reasoning_tokens(mock: RunningServer) -> None:
    reply = oai(mock).responses.create(model="o-x", input="hi", reasoning={"effort": "low"})
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.usage is not None
    assert reply.usage.output_tokens_details.reasoning_tokens == CHUNKS
    assert reply.usage.output_tokens == 2 * CHUNKS  # reasoning is part of output
    with oai(mock).responses.stream(model="o-x", input="hi", reasoning={"effort": "low"}) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    assert final.usage is not None and final.usage.total_tokens == 1 + 2 * CHUNKS


# ---- OpenAI tools -----------------------------------------------------------------------

WEATHER_PARAMETERS: Any = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city"],
}
WEATHER_INPUT = {"city": "mock", "unit": "celsius", "days": 1}
CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}}
]
RESPONSES_TOOLS: Any = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMETERS, "strict": False}
]


def test_chat_tool_calls_whole_and_streamed(mock: RunningServer) -> None:
    reply = oai(mock).chat.completions.create(model="x", messages=ONE_WORD, tools=CHAT_TOOLS)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_INPUT
    assert reply.usage is not None and reply.usage.completion_tokens == CHUNKS

    with oai(mock).chat.completions.stream(
        model="x", messages=ONE_WORD, tools=CHAT_TOOLS, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == WEATHER_INPUT
    assert final.usage is not None and final.usage.completion_tokens == CHUNKS

    unused = oai(mock).chat.completions.create(
        model="x", messages=ONE_WORD, tools=CHAT_TOOLS, tool_choice="none"
    )
    assert unused.choices[0].message.content == TEXT


def test_responses_function_call_whole_and_streamed(mock: RunningServer) -> None:
    reply = oai(mock).responses.create(model="x", input="hi", tools=RESPONSES_TOOLS)
    [item] = reply.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert json.loads(item.arguments) == WEATHER_INPUT

    with oai(mock).responses.stream(model="x", input="hi", tools=RESPONSES_TOOLS) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_response()
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * CHUNKS,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [item] = final.output
    assert item.type == "function_call" and json.loads(item.arguments) == WEATHER_INPUT
    assert final.usage is not None and final.usage.output_tokens == CHUNKS


# ---- OpenAI legacy completions, audio, embeddings ---------------------------------------


def test_legacy_completions_whole_and_streamed(mock: RunningServer) -> None:
    reply = oai(mock).completions.create(model="gpt-3.5-turbo-instruct", prompt="one two")
    assert reply.object == "text_completion"
    assert reply.choices[0].text == TEXT
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    assert reply.usage.completion_tokens == CHUNKS

    stream = oai(mock).completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="one two",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == TEXT
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 2 + CHUNKS


def test_audio_transcription_upload(mock: RunningServer) -> None:
    audio = b"RIFF" + b"\0" * 4996  # 5 kB: 5 audio tokens
    reply = oai(mock).audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("clip.wav", audio, "audio/wav")
    )
    assert reply.text == TEXT
    usage = reply.usage
    assert usage is not None and usage.type == "tokens"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, CHUNKS, 5 + CHUNKS)
    text = oai(mock).audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio), response_format="text"
    )
    assert str(text).startswith("Hello from the mock")


def test_audio_transcription_stream_and_whisper_usage(mock: RunningServer) -> None:
    audio = b"\0" * 32_000  # two seconds of 8 kHz 16-bit mono
    stream = oai(mock).audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("clip.wav", audio), stream=True
    )
    events = list(stream)
    assert [e.type for e in events] == ["transcript.text.delta"] * CHUNKS + ["transcript.text.done"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == TEXT
    assert done.usage is not None and done.usage.type == "tokens"
    assert done.usage.input_tokens == 32

    whisper = oai(mock).audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio))
    assert whisper.usage is not None and whisper.usage.type == "duration"
    assert whisper.usage.seconds == 2
    verbose = oai(mock).audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio), response_format="verbose_json"
    )
    assert verbose.duration == 2.0 and verbose.segments and verbose.segments[0].text == TEXT


def test_audio_speech_returns_a_wav(mock: RunningServer) -> None:
    reply = oai(mock).audio.speech.create(model="tts-1", voice="alloy", input="two words")
    audio = reply.read()
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert len(audio) == 44 + 2 * 800 * 2  # a tenth of a second of 8 kHz silence per word


def test_embeddings_usage_follows_the_input(mock: RunningServer) -> None:
    # The SDK asks for base64 and decodes it.
    reply = oai(mock).embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    assert [len(item.embedding) for item in reply.data] == [3, 3]
    assert reply.data[0].embedding == pytest.approx([0.1, 0.2, 0.3])
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (4, 4)
    raw = post(mock, "/v1/embeddings", {"input": "one", "dimensions": 5}).json()
    assert raw["data"][0]["embedding"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert raw["usage"] == {"prompt_tokens": 1, "total_tokens": 1}


# ---- Anthropic --------------------------------------------------------------------------

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER_PARAMETERS,
}


def test_anthropic_usage_with_cache_fields(mock: RunningServer) -> None:
    reply = claude(mock).messages.create(model="claude-x", max_tokens=50, messages=THREE_WORDS)
    assert reply.content[0].type == "text"
    assert reply.usage.input_tokens == 3 and reply.usage.output_tokens == CHUNKS
    assert reply.usage.cache_creation_input_tokens == 0
    assert reply.usage.cache_read_input_tokens == 0

    long_prompt: Any = [{"role": "user", "content": " ".join(["word"] * 20)}]
    cached = claude(mock, **{"x-mock-cached-tokens": "12", "x-mock-cache-write-tokens": "5"})
    reply = cached.messages.create(model="claude-x", max_tokens=50, messages=long_prompt)
    assert reply.usage.cache_read_input_tokens == 12
    assert reply.usage.cache_creation_input_tokens == 5
    assert reply.usage.input_tokens == 20 - 12 - 5  # what is left after the cache


def test_anthropic_stream_usage_is_cumulative(mock: RunningServer) -> None:
    raw = post(
        mock,
        "/v1/messages",
        {"model": "claude-x", "max_tokens": 50, "messages": THREE_WORDS, "stream": True},
    )
    events = [(name, json.loads(data)) for name, data in sse_events(raw.text)]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]["usage"]
    assert start["input_tokens"] == 3 and "cache_read_input_tokens" in start
    [delta] = [data for name, data in events if name == "message_delta"]
    assert delta["usage"] == {  # totals so far, not increments
        "input_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": CHUNKS,
    }
    with claude(mock).messages.stream(model="claude-x", max_tokens=50, messages=ONE_WORD) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == CHUNKS and final.usage.input_tokens == 1


def test_anthropic_thinking_blocks_count_as_output(mock: RunningServer) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    reply = claude(mock).messages.create(
        model="claude-x", max_tokens=2048, messages=ONE_WORD, thinking=thinking
    )
    assert [block.type for block in reply.content] == ["thinking", "text"]
    assert reply.usage.output_tokens == 2 * CHUNKS  # thinking is billed as output
    with claude(mock).messages.stream(
        model="claude-x", max_tokens=2048, messages=ONE_WORD, thinking=thinking
    ) as stream:
        final = stream.get_final_message()
    [thought, text] = final.content
    assert thought.type == "thinking" and thought.thinking == TEXT and thought.signature
    assert text.type == "text" and text.text == TEXT
    assert final.usage.output_tokens == 2 * CHUNKS


def test_anthropic_count_tokens(mock: RunningServer) -> None:
    counted = claude(mock).messages.count_tokens(
        model="claude-x", system="be brief", messages=THREE_WORDS
    )
    assert counted.input_tokens == 5


def test_anthropic_tool_use_whole_and_streamed(mock: RunningServer) -> None:
    reply = claude(mock).messages.create(
        model="claude-x", max_tokens=50, messages=ONE_WORD, tools=[WEATHER_TOOL]
    )
    assert reply.stop_reason == "tool_use"
    [block] = reply.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == WEATHER_INPUT

    raw = post(
        mock,
        "/v1/messages",
        {
            "model": "claude-x",
            "max_tokens": 50,
            "messages": ONE_WORD,
            "tools": [WEATHER_TOOL],
            "stream": True,
        },
    )
    events = [json.loads(data) for _, data in sse_events(raw.text)]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert starts[0]["content_block"]["type"] == "tool_use"
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert len(deltas) == CHUNKS and {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == WEATHER_INPUT

    with claude(mock).messages.stream(
        model="claude-x", max_tokens=50, messages=ONE_WORD, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == WEATHER_INPUT
    assert final.usage.output_tokens == CHUNKS


# ---- Gemini -----------------------------------------------------------------------------


def test_gemini_generate_usage(mock: RunningServer) -> None:
    client = gemini(mock)
    reply = client.models.generate_content(model="gemini-x", contents="three words here")
    assert reply.text == TEXT
    usage = reply.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (3, CHUNKS)
    assert usage.total_token_count == 3 + CHUNKS
    assert usage.thoughts_token_count is None

    thinking = genai_types.GenerateContentConfig(
        thinking_config=genai_types.ThinkingConfig(thinking_budget=1024)
    )
    reply = client.models.generate_content(model="gemini-x", contents="hi", config=thinking)
    usage = reply.usage_metadata
    assert usage is not None and usage.thoughts_token_count == CHUNKS
    assert usage.total_token_count == 1 + CHUNKS + CHUNKS


def test_gemini_function_call(mock: RunningServer) -> None:
    declaration = genai_types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=WEATHER_PARAMETERS
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    client = gemini(mock)
    reply = client.models.generate_content(model="gemini-x", contents="hi", config=config)
    [call] = reply.function_calls or []
    assert call.name == "get_weather" and call.args == WEATHER_INPUT
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.candidates_token_count == CHUNKS
    chunks = list(
        client.models.generate_content_stream(model="gemini-x", contents="hi", config=config)
    )
    [chunk] = chunks
    [call] = chunk.function_calls or []
    assert call.name == "get_weather" and call.args == WEATHER_INPUT


def test_gemini_sse_stream(mock: RunningServer) -> None:
    client = gemini(mock)
    chunks = list(client.models.generate_content_stream(model="gemini-x", contents="two words"))
    assert "".join(c.text or "" for c in chunks) == TEXT
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == "STOP"
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert last.usage_metadata is not None
    assert last.usage_metadata.prompt_token_count == 2
    assert last.usage_metadata.candidates_token_count == CHUNKS
    assert last.usage_metadata.total_token_count == 2 + CHUNKS


def test_gemini_stream_without_alt_sse_is_a_json_array_written_incrementally(
    mock: RunningServer,
) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "two words"}]}]}
    pieces = []
    with httpx.stream(
        "POST", f"{mock.url}/v1beta/models/gemini-x:streamGenerateContent", json=body, timeout=10
    ) as reply:
        assert reply.headers["content-type"].startswith("application/json")
        pieces = list(reply.iter_raw())
    whole = b"".join(pieces)
    assert whole.startswith(b"[{") and whole.endswith(b"}\r\n]")
    assert whole.count(b"}\r\n,{") == CHUNKS - 1
    assert len(pieces) >= CHUNKS  # one write per element, not one at the end
    chunks = json.loads(whole)
    assert len(chunks) == CHUNKS
    assert chunks[-1]["usageMetadata"] == {
        "promptTokenCount": 2,
        "candidatesTokenCount": CHUNKS,
        "totalTokenCount": 2 + CHUNKS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
    }


def test_gemini_count_tokens_and_embeddings(mock: RunningServer) -> None:
    client = gemini(mock)
    counted = client.models.count_tokens(model="gemini-x", contents="four words in here")
    assert counted.total_tokens == 4
    embedded = client.models.embed_content(model="text-embedding-004", contents=["a", "b c"])
    assert embedded.embeddings is not None and len(embedded.embeddings) == 2
    assert embedded.embeddings[0].values == pytest.approx([0.1, 0.2, 0.3])
    raw = post(
        mock,
        "/v1beta/models/text-embedding-004:embedContent",
        {"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 4},
    )
    assert raw.json() == {"embedding": {"values": [0.1, 0.2, 0.3, 0.4]}}


# ---- knobs ------------------------------------------------------------------------------


def test_gzip_whole_and_streamed_flushes_per_event(mock: RunningServer) -> None:
    whole = httpx.post(
        f"{mock.url}/v1/chat/completions",
        json={"messages": ONE_WORD},
        headers={"x-mock-gzip": "1"},
    )
    assert whole.headers["content-encoding"] == "gzip"
    assert whole.json()["usage"]["total_tokens"] == 1 + CHUNKS  # httpx decodes

    body = {"messages": ONE_WORD, "stream": True}
    with httpx.stream(
        "POST", f"{mock.url}/v1/chat/completions", json=body, headers={"x-mock-gzip": "1"}
    ) as reply:
        assert reply.headers["content-encoding"] == "gzip"
        decoder = zlib.decompressobj(wbits=31)
        for piece in reply.iter_raw():
            # Each piece decodes on its own into whole events: the compressor was flushed.
            text = decoder.decompress(piece)
            assert text == b"" or text.endswith(b"\n\n")
    assert decoder.eof


def test_gzip_option_honours_accept_encoding() -> None:
    with serve_in_thread(MockUpstream(MockOptions(gzip=True))) as mock:
        asked = httpx.post(
            f"{mock.url}/v1/responses", json={"input": "hi"}, headers={"accept-encoding": "gzip"}
        )
        assert asked.headers["content-encoding"] == "gzip"
        assert asked.json()["usage"]["total_tokens"] == 9
        plain = httpx.post(
            f"{mock.url}/v1/responses",
            json={"input": "hi"},
            headers={"accept-encoding": "identity"},
        )
        assert "content-encoding" not in plain.headers


def test_cut_after_ends_a_stream_abruptly(mock: RunningServer) -> None:
    received = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            f"{mock.url}/v1/chat/completions",
            json={"messages": ONE_WORD, "stream": True},
            headers={"x-mock-cut-after": "3"},
        ) as reply,
    ):
        for piece in reply.iter_bytes():
            received.append(piece)
    assert b"".join(received).count(b"data: ") == 3
    [stream] = httpx.get(f"{mock.url}/_mock/streams").json()
    assert stream["sent"] == 3 and stream["cut"] is True and stream["completed"] is False


def test_usage_scale(mock: RunningServer) -> None:
    reply = oai(mock, **{"x-mock-usage-scale": "1000"}).responses.create(model="x", input="hi")
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1000, CHUNKS * 1000)
    assert len(reply.output_text) == len(TEXT)


def test_status_knob_answers_each_protocols_error(mock: RunningServer) -> None:
    with pytest.raises(openai.RateLimitError):
        oai(mock, **{"x-mock-status": "429"}).responses.create(model="x", input="hi")
    with pytest.raises(anthropic.InternalServerError):
        claude(mock, **{"x-mock-status": "500"}).messages.count_tokens(model="x", messages=ONE_WORD)
    reply = post(mock, "/v1beta/models/g:countTokens", {}, **{"x-mock-status": "503"})
    assert reply.status_code == 503
    assert reply.json()["error"] == {
        "code": 503,
        "message": "mock error 503",
        "status": "UNAVAILABLE",
    }
    reply = post(mock, "/v1/messages", {}, **{"x-mock-status": "529"})
    assert reply.json()["error"] == {"type": "overloaded_error", "message": "mock error 529"}
    reply = post(mock, "/v1/chat/completions", {}, **{"x-mock-status": "429"})
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"


def test_unknown_route_is_a_404_and_control_paths_work(mock: RunningServer) -> None:
    assert post(mock, "/v1/nothing", {}).status_code == 404
    seen = httpx.get(f"{mock.url}/_mock/requests").json()
    assert [r["path"] for r in seen] == ["/v1/nothing"]
    assert httpx.post(f"{mock.url}/_mock/reset").json() == {"ok": True}
    assert httpx.get(f"{mock.url}/_mock/requests").json() == []


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The SDKs honour HTTP(S)_PROXY; the mock is on loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield
