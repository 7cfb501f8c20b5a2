"""Realtime: WebSocket sessions relayed by the proxy on servers, and ephemeral keys."""
