"""The file Vercel builds into the function; the adapter lives in handlers/vercel.py."""

from handlers.vercel import app

__all__ = ["app"]
