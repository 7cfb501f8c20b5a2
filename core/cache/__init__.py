"""The response cache (CACHE_URL): a repeated deterministic request is answered from a
stored copy of an earlier reply, with no upstream call and no spend.

- `settings.py`: CACHE_* read and checked with the rest of the settings (cold start: light);
- `key.py`: which requests may be cached, and under which key (one caller's entries are
  never another's unless CACHE_SCOPE=shared);
- `entry.py`: a stored reply as a store document, and the bounded copy the relay fills;
- `check.py`: the admission check that looks up, replays and stores.
"""
