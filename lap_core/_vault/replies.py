"""The proxy's own answers: refusals as JSON errors, and the model list it answers itself.

An error is `{"error": {"code", "type", "message", "details"}}`: LAP's error shape, with the
`type` OpenAI's and Anthropic's clients read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import h11
import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import SocketStream

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class Refusal(Exception):
    """A request (or connection) the proxy refuses: the status, a stable code and what went wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> bytes:
        """Return the JSON error body."""
        error = {
            "code": self.code,
            "type": _ERROR_TYPES.get(self.status, "api_error"),
            "message": self.message,
            "details": {},
        }
        return msgspec.json.encode({"error": error})


async def refuse_connection(stream: SocketStream, refusal: Refusal) -> None:
    """Answer a connection that gets no HTTP handling (yet) with one error response; it is closed next."""
    body = refusal.body()
    head = (
        f"HTTP/1.1 {refusal.status} {refusal.code}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    try:
        with anyio.move_on_after(5):
            await stream.send(head.encode() + body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


async def send_json(
    conn: h11.Connection, stream: SocketStream, status: int, payload: bytes, *, head_only: bool, close: bool
) -> None:
    """Send one JSON response on an HTTP connection (`close`: and end the connection after it)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    try:
        await stream.send(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if not head_only:
            await stream.send(conn.send(h11.Data(data=payload)) or b"")
        await stream.send(conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:
        conn.send_failed()


def model_list(models: Sequence[str]) -> bytes:
    """Return `GET /v1/models` for an agent: its own models, in the OpenAI and Anthropic shapes at once."""
    data = [
        {
            "id": model,
            "object": "model",
            "type": "model",
            "display_name": model,
            "created": 0,
            "created_at": "1970-01-01T00:00:00Z",
            "owned_by": "lap",
        }
        for model in models
    ]
    first, last = (models[0], models[-1]) if models else (None, None)
    return msgspec.json.encode({"object": "list", "data": data, "has_more": False, "first_id": first, "last_id": last})
