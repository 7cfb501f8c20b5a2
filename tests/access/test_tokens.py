"""Token records: what is stored (a hash, never the token), scopes, expiry parsing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.access.tokens import (
    TokenError,
    create_token,
    hash_hex,
    list_tokens,
    parse_expiry,
    revoke_token,
    set_disabled,
    store_key,
)
from core.stores import Store
from core.stores.memory import MemoryStore


def test_only_the_hash_is_stored(store: Store) -> None:
    token, _ = create_token(store, "alice", providers=("openai",), models=("gpt-4o*",))
    assert token.startswith("llmp_") and len(token) > 40
    [item] = store.scan("")
    assert item.key == store_key(hash_hex(token))
    assert token not in repr(item)
    [listed] = list_tokens(store)
    assert listed.label == "alice" and listed.providers == ("openai",)
    assert listed.token_hash == hash_hex(token)


def test_labels_are_unique_and_revoke_disable_find_by_label_or_id() -> None:
    store = MemoryStore()
    _, alice = create_token(store, "alice")
    with pytest.raises(TokenError, match="already exists"):
        create_token(store, "alice")
    assert set_disabled(store, alice.id, True).disabled is True
    assert list_tokens(store)[0].disabled is True
    assert set_disabled(store, "alice", False).disabled is False
    revoke_token(store, "alice")
    assert list_tokens(store) == []
    with pytest.raises(TokenError, match="no token"):
        revoke_token(store, "alice")


def test_two_creates_of_one_label_at_once_leave_one_token(store: Store) -> None:
    """Two admins create `alice` at once: both passed the label check before either wrote.
    Two tokens labelled alice (main) meant `revoke alice` ended one, the other still worked."""
    real_put = store.put
    others: list[str] = []

    def other_admin_first(key: str, doc: Any, **kwargs: Any) -> None:
        if key.startswith("token:") and not others:
            others.append("")
            others[0] = create_token(store, "alice")[0]  # lands between check and write
        real_put(key, doc, **kwargs)

    store.put = other_admin_first  # type: ignore[method-assign]
    with pytest.raises(TokenError, match="created meanwhile"):
        create_token(store, "alice")
    store.put = real_put  # type: ignore[method-assign]
    assert [r.label for r in list_tokens(store)] == ["alice"]
    assert store.get(store_key(hash_hex(others[0]))) is not None  # the other admin's stands
    revoke_token(store, "alice")
    assert list_tokens(store) == []


def test_an_enable_racing_a_revoke_never_brings_the_token_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins: one enables a disabled token while the other revokes it. The enable
    read the record before the revoke landed; its write must not recreate the token (as a
    read then a `put` did: the revoked token worked again, enabled)."""
    from core.access import tokens

    token, record = create_token(store, "alice")
    set_disabled(store, record.id, True)
    real_find = tokens.find_token

    def found_then_revoked(store_: Store, label_or_id: str) -> tokens.TokenRecord:
        found = real_find(store_, label_or_id)
        store_.delete(store_key(found.token_hash))  # the other admin's revoke lands here
        return found

    monkeypatch.setattr(tokens, "find_token", found_then_revoked)
    with pytest.raises(TokenError, match="revoked meanwhile"):
        set_disabled(store, record.id, False)
    assert store.get(store_key(hash_hex(token))) is None
    assert list_tokens(store) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("12h", 43200), ("30d", 30 * 86400), ("2w", 14 * 86400), ("45s", 45)],
)
def test_relative_expiry(text: str, seconds: int) -> None:
    assert parse_expiry(text, 1000.0) == 1000.0 + seconds


def test_absolute_never_and_bad_expiry() -> None:
    assert parse_expiry("2100-01-01", time.time()) == 4102444800.0
    assert parse_expiry("never", 0) is None and parse_expiry(None, 0) is None
    with pytest.raises(TokenError, match="in the past"):
        parse_expiry("2001-01-01", time.time())
    with pytest.raises(TokenError, match="like 30d"):
        parse_expiry("soon", time.time())


def test_scopes_match_names_and_patterns() -> None:
    store = MemoryStore()
    _, record = create_token(store, "r", providers=("openai", "gemini"), models=("gpt-4o*", "o3"))
    assert record.allows_provider("gemini") and not record.allows_provider("anthropic")
    assert record.allows_model("gpt-4o-mini") and record.allows_model("o3")
    assert not record.allows_model("o3-pro") and not record.allows_model("gpt-4")
