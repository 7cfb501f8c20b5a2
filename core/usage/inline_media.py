"""Media carried in the body whose tokens its bytes do not bound.

A request's prompt is reserved from its size (core/usage/estimate.py): about a token for
every three bytes, an upper bound for text. Media are billed by what they hold, not by
their bytes: an image by its pixels (a 1x1 PNG of 70 bytes is 2,833 input tokens on
gpt-4o-mini; a 1568x1568 one-bit PNG of a few hundred bytes, 1,600 on Claude; any image
258 on Gemini), audio and video by their seconds, a PDF by its pages (each page an image,
blank pages a few bytes each). Reserved by size, fifty such requests sent at once all
fitted a cap that had room for one, and each used many times what it held. So a request
carrying media inline reserves the model's whole context window as its prompt, as one
that names its input by URL does.

The fields, as the protocols write them: a `data:` URL where a media URL goes (OpenAI's
`image_url` in chat and Responses, vendors' `audio_url` / `video_url`), OpenAI's
`input_audio` and a file's `file_data`, Anthropic's `{"type": "base64"}` sources (images
and PDF documents), Gemini's `inlineData` parts.
"""

from __future__ import annotations

from typing import Any

# Where a URL to media goes; a `data:` URL there carries the media inline.
_MEDIA_URLS = frozenset({"image_url", "imageUrl", "audio_url", "video_url", "videoUrl"})
# Members whose value is media inline, whatever it holds: OpenAI's audio part, Gemini's
# inline data (protobuf JSON takes both spellings).
_MEDIA_MEMBERS = frozenset({"input_audio", "inputAudio", "inlineData", "inline_data"})
# A file's bytes inline (OpenAI's `file_data`, a base64 string or data: URL). Gemini's
# `file_data` / `fileData` is an object naming a file by URI: input held elsewhere, read
# by the protocol's own walk (core/protocols.py), not this one.
_FILE_BYTES = frozenset({"file_data", "fileData"})

# Every spelling above holds "data", "input_audio" or "inputaudio", lowered, in its bytes
# (or a `\u` escape, or the NUL bytes of UTF-16 and UTF-32 JSON): a body with none of them
# is not walked (`_may_hold_media`).


def _may_hold_media(body: bytes) -> bool:
    # On every metered request: each test is `x.replace(needle, b"") is not x` (the needle
    # is in x), half a find's cost (core/byte_tests.py); "data" first, the likeliest.
    if body.replace(b"\\u", b"") is not body or body.replace(b"\x00", b"") is not body:
        return True
    lowered = body.lower()
    return (
        lowered.replace(b"data", b"") is not lowered
        or lowered.replace(b"input_audio", b"") is not lowered
        or lowered.replace(b"inputaudio", b"") is not lowered
    )


def _data_url(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("url")
    return isinstance(value, str) and value.lstrip()[:5].lower() == "data:"


def inline_media(document: Any, body: bytes | None = None) -> str | None:
    """The first member carrying media inline, or None. `body`, the bytes `document` was
    parsed from, spares the walk of a document that cannot hold any."""
    if not isinstance(document, dict):
        return None
    if body is not None and not _may_hold_media(body):
        return None
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "base64" and "data" in node:
                return "source"  # Anthropic's image or document, base64 inline
            for name, value in node.items():
                if isinstance(value, dict | list):
                    stack.append(value)
                if name in _MEDIA_MEMBERS and value:
                    return name
                if name in _MEDIA_URLS and _data_url(value):
                    return name
                if name in _FILE_BYTES and isinstance(value, str) and value:
                    return name
        elif isinstance(node, list):
            stack.extend(node)
    return None
