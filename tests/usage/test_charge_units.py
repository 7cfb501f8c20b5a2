"""What a request is charged and what it reserves, as units: the tokens settlement charges
for each way a reply can end, and the prompt estimate a reservation starts from."""

from __future__ import annotations

import pytest

from core.protocols import Usage
from core.stages import Outcome
from core.usage.estimate import estimated_prompt_tokens

RESERVED = Usage(300, 200)


@pytest.mark.parametrize(
    ("outcome", "charged"),
    [
        # Read to its end: what the reply reported, less than the reservation or more.
        (Outcome(200, Usage(10, 5), complete=True), Usage(10, 5)),
        (Outcome(200, Usage(900, 100), complete=True), Usage(900, 100)),
        # Cut short: the figures so far may be partial, so whichever is more.
        (Outcome(200, Usage(10, 5)), RESERVED),
        (Outcome(200, Usage(900, 100)), Usage(900, 100)),
        # As many as reserved: the reply's own split, which a budget prices (output
        # tokens cost more than input).
        (Outcome(200, Usage(450, 50)), Usage(450, 50)),
        # Billable and nothing readable: the whole reservation (fail closed).
        (Outcome(200), RESERVED),
        # Refused upstream, never reached, or answered from the cache: nothing.
        (Outcome(429, Usage(10, 5), complete=True), Usage()),
        (Outcome(None), Usage()),
        (Outcome(200, Usage(10, 5), complete=True, cache_hit=True), Usage()),
    ],
    ids=[
        "whole-less",
        "whole-more",
        "cut-less",
        "cut-more",
        "cut-same",
        "unread",
        "4xx",
        "none",
        "cached",
    ],
)
def test_settlement_charges_by_how_the_reply_ended(outcome: Outcome, charged: Usage) -> None:
    assert outcome.tokens(RESERVED) == charged


def test_the_prompt_estimate_is_an_upper_bound_for_cjk_and_english() -> None:
    """CJK runs about one token per 3-byte character, English about four characters a
    token: a reservation under either would let a caller past its token limit."""
    cjk = "漢字仮名交じり文" * 40
    assert estimated_prompt_tokens(cjk.encode()) >= len(cjk)
    english = "the quick brown fox jumps over the lazy dog " * 40
    assert estimated_prompt_tokens(english.encode()) >= len(english) / 4


def test_the_prompt_estimate_stays_close_enough_to_admit_a_caller_within_its_limit() -> None:
    """Overestimating by a large factor would refuse a caller well within its token limit:
    3 bytes a token, rounded up."""
    assert estimated_prompt_tokens(b"x" * 3000) == 1000
    assert estimated_prompt_tokens(b"x" * 3001) == 1001
    assert estimated_prompt_tokens(b"") == 0
