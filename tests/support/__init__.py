"""Shared fakes and assertions for the suites (the mock upstream's records, stores that
fail on demand, clocks, polling)."""
