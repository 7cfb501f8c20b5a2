"""A fake OpenAI + Anthropic + Gemini server for demos, tests and benchmarks (see app.py)."""

from core.devtools.mock_upstream.app import MockOptions, MockUpstream, _text, count_words

__all__ = ["MockOptions", "MockUpstream", "_text", "count_words"]
