"""Fakes, fixtures and assertions used by more than one folder of tests/ (the mock
upstream's records, store backends, scripted and realtime upstreams, polling); see
docs/development.md, "The layout of tests/"."""
