"""The example chat page (examples/chat) served beside the proxy by `llm-proxy demo`.

Only the page's own files, read once at start; every other request goes to the app behind.
Not used by any deployment: a real page is static hosting's job.
"""

from __future__ import annotations

from pathlib import Path

from core.types import ASGIApp, Receive, Scope, Send, send_response

PAGE_DIR = Path(__file__).resolve().parents[2] / "examples" / "chat"
_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send_response(send, 404, [], b"")


class PageApp:
    def __init__(self, app: ASGIApp = not_found, directory: Path = PAGE_DIR) -> None:
        self.app = app
        if not (directory / "index.html").is_file():
            raise FileNotFoundError(
                f"the example page is not at {directory}: run from a checkout of the repository"
            )
        self.files: dict[str, tuple[bytes, bytes]] = {}
        for path in directory.iterdir():
            if path.suffix in _TYPES:
                self.files["/" + path.name] = (_TYPES[path.suffix], path.read_bytes())
        self.files["/"] = self.files["/index.html"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            found = self.files.get(scope["path"])
            if found is not None:
                content_type, body = found
                headers = [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ]
                await send_response(send, 200, headers, body)
                return
        await self.app(scope, receive, send)
