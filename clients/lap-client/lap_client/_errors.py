"""The client's errors: one class per family of the server's error answers, and one for no answer at all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import httpx


class ClientError(Exception):
    """Base class of every error `lap_client` raises."""


class ConnectionFailed(ClientError):
    """The server gave no answer: it could not be reached, the connection broke, or it timed out.

    The underlying httpx error is the `__cause__`.
    """


class ApiError(ClientError):
    """The server answered with an error: its HTTP `status`, its stable error `code`, `message` and `details`.

    Subclasses name the family (`NotFound`, `Conflict`, ...); an answer of no family raises `ApiError` itself.
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class InvalidInput(ApiError):
    """The request was refused as malformed or invalid (400, 413, 422): `code` says how (`validation_error`...)."""


class Unauthorized(ApiError):
    """No API key, or one the server does not know (401)."""


class Forbidden(ApiError):
    """The key is valid but may not do this (403), such as a team key managing teams."""


class NotFound(ApiError):
    """The object does not exist, or is not visible to the key's team (404)."""


class Conflict(ApiError):
    """The request conflicts with the current state (409): a duplicate name, a busy session, an agent in use."""


class RateLimited(ApiError):
    """Too many requests (429): wait `retry_after` seconds (the server's `Retry-After`) before the next one."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None, *, retry_after: float
    ) -> None:
        super().__init__(status, code, message, details)
        self.retry_after = retry_after


class ServerError(ApiError):
    """The server failed (5xx): an internal error, a store that is down, or (503 `not_ready`) not ready yet."""


_FAMILIES: dict[int, type[ApiError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
}


class _Body(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class _ErrorBody(msgspec.Struct):
    error: _Body


def error_of(response: httpx.Response) -> ApiError:
    """Return the typed error for an error answer (its body read), whatever produced it (LAP or a proxy)."""
    status = response.status_code
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody).error
    except msgspec.DecodeError:  # not LAP's error shape: a proxy's page, say
        text = response.text.strip()[:200] or response.reason_phrase
        body = _Body(code=f"http_{status}", message=text)
    if status == 429:
        retry_after = _seconds(response.headers.get("retry-after"), body.details.get("retry_after"))
        return RateLimited(status, body.code, body.message, body.details, retry_after=retry_after)
    family = ServerError if status >= 500 else _FAMILIES.get(status, ApiError)
    return family(status, body.code, body.message, body.details)


def _seconds(*candidates: object) -> float:
    """The first candidate that is a number of seconds (the header, then the body's details), else 1."""
    for candidate in candidates:
        try:
            return max(0.0, float(str(candidate)))
        except ValueError:
            continue
    return 1.0
