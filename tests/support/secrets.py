"""What the upstream must never see: the caller's credential, in any slot, repeated or not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

# Every slot an SDK may carry a key in: where a caller's proxy token could ride upstream.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def assert_token_absent(seen: Mapping[str, Any], token: str) -> None:
    """`seen` is one request the mock upstream recorded. The token appears in no header as
    it arrived (repeats kept: a dict would show only a repeated name's last value), in no
    query parameter (raw or percent-decoded) and nowhere in the path."""
    header_list = seen["header_list"]
    for name, value in header_list:
        assert token not in value, f"the caller's token reached the upstream in {name}"
        assert token not in unquote(value), f"the caller's token reached the upstream in {name}"
    for slot in CREDENTIAL_HEADERS:
        values = [value for name, value in header_list if name == slot]
        assert len(values) <= 1, f"{slot} reached the upstream {len(values)} times: {values}"
    for where in ("query", "raw_path", "path"):
        text = str(seen.get(where, ""))
        assert token not in text and token not in unquote(text), f"token in the {where}"
