"""Thin platform adapters: each one only adapts its platform's I/O to core's ASGI app."""
