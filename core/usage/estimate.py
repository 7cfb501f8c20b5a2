"""The worst case a request can cost, reserved before it goes upstream.

Prompt: an upper estimate from the body's size. Output: the request's own cap (max_tokens
and its spellings, times the answers asked for: OpenAI `n`, a list of prompts, Gemini
`candidateCount`), else MAX_TOKENS_CAP, else the model's own limit from the price table;
never more than that limit (or MAX_OUTPUT_LIMIT) an answer. More than MAX_ANSWERS answers
is refused (400): no provider gives them, and their worst case would overflow the sums.
A route that generates no text (embeddings) reserves its prompt only. A prompt that carries
media (core/usage/inline_media.py), or, on a generating route, names input it does not
carry, reserves the model's context window. A realtime session reserves
REALTIME_RESERVE_TOKENS up front (its usage is metered as it goes), and a minted ephemeral
key EPHEMERAL_KEY_TOKENS (used outside the proxy: charged in full).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from core.errors import BadRequest
from core.protocols import UnreadableCount, Usage, lenient_count
from core.usage.bounds import DEFAULT_MAX_INPUT, DEFAULT_MAX_OUTPUT, MAX_OUTPUT_LIMIT
from core.usage.inline_media import inline_media

if TYPE_CHECKING:
    from core.request import ProxyRequest
    from core.usage.prices import PriceTable


# Answers one request may ask for. OpenAI's `n` stops at 128, Gemini's candidateCount at 8,
# a legacy completions request takes 2048 prompts: past this the count is a mistake or an
# attack, and its worst case (up to MAX_OUTPUT_LIMIT tokens an answer) would overflow the
# dollar arithmetic and the stores' 64-bit counters. 10**6 answers of 10**7 tokens at the
# dearest rate a price may have is 10**18 micro-dollars: still a 64-bit integer.
MAX_ANSWERS = 1_000_000


class TooManyAnswers(BadRequest):
    """A request asks for more answers (n, candidateCount, prompts) than any provider gives."""

    code = "too_many_answers"


class UnreadableAnswerCount(BadRequest):
    """n, best_of or candidateCount is not a whole number: the worst case cannot be known."""

    code = "invalid_answer_count"


def answers_of(request: ProxyRequest, document: dict[str, Any]) -> int:
    """How many answers the request asks for; a count the proxy cannot read is a 400, never
    taken as one answer (the upstream may read it as many)."""
    try:
        return request.wire.answers(document)
    except UnreadableCount as exc:
        raise UnreadableAnswerCount(
            f"The answer count (n, best_of or candidateCount) must be a whole number: {exc}."
        ) from None


def estimated_prompt_tokens(body: bytes) -> int:
    """An upper estimate of a prompt's tokens from its size: about 3 bytes a token holds for
    English text (4 characters a token) and for CJK (one 3-byte character a token)."""
    return math.ceil(len(body) / 3)


class WorstCase:
    def __init__(
        self,
        prices: PriceTable,
        max_tokens_cap: int = 0,
        *,
        session_tokens: int = 0,
        key_tokens: int = 0,
    ) -> None:
        self.prices = prices
        self.max_tokens_cap = max_tokens_cap
        self.session_tokens = session_tokens
        self.key_tokens = key_tokens

    async def __call__(self, request: ProxyRequest) -> Usage:
        route = request.route
        if route.kind == "free":
            return Usage()
        if route.kind == "minting":
            return Usage(0, self.key_tokens)
        if route.name == "realtime":
            return Usage(0, self.session_tokens)
        prompt = estimated_prompt_tokens(request.body)
        document = await request.document()
        if not isinstance(document, dict):
            document = {}
        wire = request.wire
        price = self.prices.find(await request.model())
        if inline_media(document, request.body) is not None or (
            route.generates and wire.input_elsewhere(document, request.body) is not None
        ):
            # The body's size says nothing of input it only names (a previous response, a
            # file, a video by URL), nor of media it carries, billed by pixels, seconds and
            # pages rather than bytes (an embedding's images too): the context window is
            # what the model may read.
            prompt = max(prompt, price.max_input if price is not None else DEFAULT_MAX_INPUT)
        if not route.generates:
            return Usage(prompt, 0)
        model_limit = price.max_output if price is not None and price.max_output else 0
        # A cap given as text or a float is a number to a lenient upstream: reserved as one.
        counted = (lenient_count(value) for _, value in wire.output_caps(document, request.route))
        asked = [value for value in counted if value is not None and value > 0]
        answers = answers_of(request, document)
        if answers > MAX_ANSWERS:
            # Not the count itself: n times the prompts may have more digits than str() takes.
            raise TooManyAnswers(
                f"The request asks for more than {MAX_ANSWERS:,} answers (n, best_of, candidateCount "
                "or a list of prompts); no provider gives that many."
            )
        per_answer = max(asked) if asked else 0
        if not per_answer:
            per_answer = self.max_tokens_cap or model_limit or DEFAULT_MAX_OUTPUT
        # No model writes more than the longest answer a price may state: a max_tokens past
        # it (a 4000-digit one included) reserves that, and the sums stay finite.
        per_answer = min(per_answer, model_limit or MAX_OUTPUT_LIMIT)
        return Usage(prompt, per_answer * answers)
