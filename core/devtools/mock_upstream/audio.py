"""OpenAI's audio routes: transcriptions and translations (multipart uploads; usage in
tokens, or seconds for whisper-1), and speech (a WAV of silence)."""

from __future__ import annotations

import struct
from typing import Any

from core.devtools.mock_upstream.content import (
    count_words,
    reply_text,
    word,
)
from core.devtools.mock_upstream.framing import Reply, sse
from core.devtools.mock_upstream.knobs import Knobs


async def transcription(form: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    """Transcriptions (and translations) of a multipart upload. gpt-4o-* models report
    token usage (about one audio token per kB); whisper-1 reports seconds (16 kB a second:
    8 kHz 16-bit mono)."""
    audio = b"".join(form["__files"].values())
    output = knobs.chunks * knobs.scale
    usage: dict[str, Any]
    if form.get("model") == "whisper-1":
        usage = {"type": "duration", "seconds": max(1, len(audio) // 16000) * knobs.scale}
    else:
        audio_tokens = max(1, len(audio) // 1000) * knobs.scale
        usage = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": audio_tokens + output,
        }
    text = reply_text(knobs.chunks)
    if form.get("stream") == "true":
        events = [
            sse({"type": "transcript.text.delta", "delta": word(i), "logprobs": []})
            for i in range(knobs.chunks)
        ]
        done = {"type": "transcript.text.done", "text": text, "logprobs": [], "usage": usage}
        await reply.stream([*events, sse(done)])
        return
    await reply.generating()
    response_format = form.get("response_format", "json")
    if response_format in ("text", "srt", "vtt"):
        await reply.body(_subtitles(response_format, text), b"text/plain; charset=utf-8")
    elif response_format == "verbose_json":
        seconds = max(1, len(audio) // 16000)
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": float(seconds),
            "text": text,
            "tokens": list(range(knobs.chunks)),
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        verbose = {
            "task": "transcribe",
            "language": "english",
            "duration": float(seconds),
            "text": text,
            "segments": [segment],
            "usage": {"type": "duration", "seconds": seconds * knobs.scale},
        }
        await reply.json(200, verbose)
    else:
        await reply.json(200, {"text": text, "usage": usage})


def _subtitles(response_format: str, text: str) -> bytes:
    if response_format == "srt":
        return f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n".encode()
    if response_format == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n".encode()
    return text.encode()


def _wav(samples: int, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of silence."""
    data = b"\0\0" * samples
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(data),
    )
    return header + data


async def speech(request: dict[str, Any], knobs: Knobs, reply: Reply) -> None:
    # A tenth of a second of silence per word of input.
    samples = 800 * max(1, count_words({"input": request.get("input", "")}))
    await reply.generating()
    await reply.body(_wav(samples), b"audio/wav")
