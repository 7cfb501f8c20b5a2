"""Gemini's resumable upload (`files.upload`) at `/upload/v1beta/files`: the start leg
answers `x-goog-upload-url` on the host the request named (the mock's own), the upload leg
takes the bytes (`upload`, then `upload, finalize`) and answers the file resource."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from core.devtools.mock_upstream.framing import GEMINI_JSON, gemini_dumps, loads
from core.devtools.mock_upstream.knobs import int_header
from core.types import Send


@dataclass
class UploadSession:
    size: int
    mime_type: str
    display_name: str
    received: int = 0

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256()

    def resource(self, upload_id: str) -> dict[str, Any]:
        """The file resource Gemini answers an upload's finalize with."""
        name = "files/" + hashlib.sha256(upload_id.encode()).hexdigest()[:12]
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        later = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 172800))
        resource = {
            "name": name,
            "mimeType": self.mime_type,
            "sizeBytes": str(self.received),
            "createTime": now,
            "updateTime": now,
            "expirationTime": later,
            "sha256Hash": base64.b64encode(self.digest.hexdigest().encode()).decode(),
            # The canonical file URI models read, not a host to reach.
            "uri": f"https://generativelanguage.googleapis.com/v1beta/{name}",
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        if self.display_name:
            resource["displayName"] = self.display_name
        return resource


async def send_upload(
    send: Send,
    code: int,
    body: bytes,
    *,
    status: str,
    url: str | None = None,
    received: int | None = None,
) -> None:
    """A resumable upload's reply: `x-goog-upload-status` always, the session's URL on start."""
    headers = [
        (b"content-type", GEMINI_JSON),
        (b"content-length", str(len(body)).encode()),
        (b"x-goog-upload-status", status.encode()),
    ]
    if url is not None:
        headers += [
            (b"x-goog-upload-url", url.encode()),
            (b"x-goog-upload-control-url", url.encode()),
            (b"x-goog-upload-chunk-granularity", b"8388608"),
        ]
    if received is not None:
        headers.append((b"x-goog-upload-size-received", str(received).encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ResumableUploads:
    """Gemini's resumable upload protocol, both legs, at `/upload/.../files`."""

    def __init__(self, keep: int) -> None:
        # Sessions by upload_id, the oldest dropped past `keep`.
        self.sessions: dict[str, UploadSession] = {}
        self.keep = keep

    async def __call__(self, headers: dict[str, str], query: str, body: bytes, send: Send) -> None:
        command = {c.strip() for c in headers.get("x-goog-upload-command", "").split(",")}
        if "start" in command:
            upload_id = "mock-upload-" + secrets.token_urlsafe(16)
            file = loads(body).get("file") or {}
            self.sessions[upload_id] = UploadSession(
                size=int_header(headers, "x-goog-upload-header-content-length", 0),
                mime_type=headers.get("x-goog-upload-header-content-type", ""),
                display_name=str(file.get("displayName", file.get("display_name", ""))),
            )
            while len(self.sessions) > self.keep:
                del self.sessions[next(iter(self.sessions))]
            # On the host the request named: the mock's own, as the real API names its own.
            host = headers.get("host", "127.0.0.1")
            url = (
                f"http://{host}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
            )
            await send_upload(send, 200, b"", url=url, status="active")
            return
        [upload_id] = parse_qs(query).get("upload_id") or [""]
        session = self.sessions.get(upload_id)
        if session is None:
            payload = {"error": {"code": 404, "message": "no such upload", "status": "NOT_FOUND"}}
            await send_upload(send, 404, gemini_dumps(payload), status="final")
            return
        if "upload" in command:
            if int_header(headers, "x-goog-upload-offset", -1) != session.received:
                await send_upload(send, 400, b"", status="final")
                return
            session.digest.update(body)
            session.received += len(body)
        if "finalize" in command:
            del self.sessions[upload_id]
            resource = session.resource(upload_id)
            await send_upload(send, 200, gemini_dumps({"file": resource}), status="final")
            return
        await send_upload(send, 200, b"", status="active", received=session.received)
