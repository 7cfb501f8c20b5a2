"""A fake OpenAI + Anthropic + Gemini server for demos, tests and benchmarks.

Plain ASGI with no framework, so it is never the bottleneck of a benchmark. It speaks the
real wire formats (JSON, SSE, Gemini's streamed JSON array, multipart uploads) of the routes
the SDKs call by default, reports usage on each, and records what it received, so tests can
check that it saw the real key and never the caller's token.

Usage is deterministic, so tests can predict it: prompt tokens are the words in the request's
text fields (at least 1); output tokens are the chunks produced (one word each); reasoning
tokens, when the request asks for reasoning or thinking, equal the chunks too. A Gemini
stream stops at the request's generationConfig.maxOutputTokens (finishReason MAX_TOKENS).

Per request, headers steer it:

| header | effect |
|---|---|
| `x-mock-chunks: N` | words in a reply (SSE events in a stream) |
| `x-mock-delay-ms: F` | pause before each chunk (a whole reply waits chunks x delay) |
| `x-mock-status: S` | answer an error with this status, in the protocol's own shape |
| `x-mock-gzip: 1` | gzip the reply (streams flush the compressor per event) |
| `x-mock-models: a,b` | the models a model list names (default `mock-model` for OpenAI-shaped lists, each provider's own for Anthropic's and Gemini's native ones); model_lists.py serves each provider's lists and lookups, paged as it pages them |
| `x-mock-cut-after: N` | end a stream abruptly after N events (no terminating chunk) |
| `x-mock-continue: 1` | Gemini: a request whose model turn holds the reply's first words (then a user turn) gets the rest of the reply, as a model asked to continue would |
| `x-mock-usage-scale: K` | multiply every reported token count by K |
| `x-mock-cached-tokens: N` | N prompt tokens read from cache (OpenAI cached_tokens, Anthropic cache_read_input_tokens, Gemini cachedContentTokenCount) |
| `x-mock-cache-write-tokens: N` | N prompt tokens written to cache (Anthropic cache_creation_input_tokens) |

With `MockOptions(gzip=True)` (`llm-proxy mock-upstream --gzip`) every reply to a request
that sends `Accept-Encoding: gzip` is gzipped, as the real providers do.
`/_mock/requests`, `/_mock/streams` and `/_mock/reset` show and clear what it recorded.

The modules: app (the ASGI app, what it records, the route table), knobs (options and
x-mock-* headers), content (words, usage, tool arguments, vectors), framing (JSON, SSE,
streams, request bodies), errors (each provider's error shape), one module per provider
(openai, anthropic, gemini), audio (OpenAI's audio routes) and uploads (Gemini's resumable
upload). Run it alone with `python -m core.devtools.mock_upstream` or
`llm-proxy mock-upstream`.
"""

from core.devtools.mock_upstream.app import ROUTES, MockUpstream, Route, route
from core.devtools.mock_upstream.content import count_words, prompt_tokens, reply_text
from core.devtools.mock_upstream.knobs import MockOptions

# The first N words of every reply; tests predicted replies with this name before the split.
_text = reply_text

__all__ = [
    "ROUTES",
    "MockOptions",
    "MockUpstream",
    "Route",
    "_text",
    "count_words",
    "prompt_tokens",
    "reply_text",
    "route",
]
