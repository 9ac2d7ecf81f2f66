"""One error shape for every failure: `{"error": {"code", "message", "details"}}`, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from lap_core import Conflict, InvalidInput, LapError, NotFound, StoreError
from lap_server.validation import InvalidBody

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ExceptionHandlersMap

log = structlog.get_logger("lap.server")

_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, StoreError: 503}


def error_response(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    """Return the API's error body."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return Response(body, status_code=status, media_type=MediaType.JSON)


def _lap_error(request: Request[Any, Any, Any], error: LapError) -> Response[Any]:
    status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 400)
    return error_response(status, error.code, error.message, error.details)


def _validation(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    details = error.extra if isinstance(error.extra, list | dict) else {}
    if "JSON is malformed" in str(error.detail) or "decode" in str(error.detail).lower():
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    return error_response(422, "validation_error", str(error.detail), {"errors": details})


def _http(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    if isinstance(error, InvalidBody):
        return error_response(400, "invalid_json", str(error.detail))
    if error.status_code == 400 and "json" in str(error.detail).lower():
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    code = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        429: "rate_limited",
    }.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail))


def _internal(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("request.failed", path=request.url.path)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error (logged on the server)")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    LapError: _lap_error,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _internal,
}
