"""Strict reading of what a client sends, so that no malformed request becomes a 500 (issue 12, finding 8).

- `LapRequest` reads JSON bodies: valid UTF-8, nested `MAX_JSON_DEPTH` levels at most (msgspec
  would recurse until a `RecursionError`), no NUL character (PostgreSQL's text cannot hold it, so
  no store takes it: the same answer on SQLite and PostgreSQL); else 400 `invalid_json` (422
  `invalid_input` for NUL) with the error shape.
- `strict_parameters` (the app's `before_request`) refuses integer query values that are not
  ASCII decimals (msgspec reads `1e3` and `1.0` as integers) and NUL in path and query values.
"""

from __future__ import annotations

import re
from array import array
from functools import cache
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.params import ParameterKwarg

from lap_core import InvalidInput

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

MAX_JSON_DEPTH = 64
"""Arrays and objects inside each other in a request body, the body's own included."""
NUL_MESSAGE = "text may not contain NUL characters (\\u0000)"

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: linear even on an unterminated string
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1, +1, -1, -1 read as signed bytes
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # `\u0000` after an even number of backslashes
_DECIMAL = re.compile(r"[0-9]+")


class InvalidBody(HTTPException):
    """The request body cannot be read as JSON: 400 `invalid_json`, saying why."""

    status_code = 400


def json_depth(body: bytes) -> int:
    """Return how deep arrays and objects nest in a JSON text (brackets in strings do not count)."""
    brackets = _STRING.sub(b"", body).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets)), default=0)


def check_json_body(body: bytes) -> None:
    """Raise `InvalidBody` or `InvalidInput` for a body LAP does not read (see the module docstring)."""
    try:
        body.decode()
    except UnicodeDecodeError as error:
        raise InvalidBody(f"the request body is not valid UTF-8 (byte {error.start})") from None
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidBody(f"the request body's JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    if b"\\u0000" in body and _ESCAPED_NUL.search(body):
        raise InvalidInput(NUL_MESSAGE)


class LapRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is checked before it is decoded."""

    async def json(self) -> Any:
        """Return the decoded JSON body (see `check_json_body` for what is refused)."""
        check_json_body(await self.body())
        try:
            return await super().json()
        except SerializationException as error:
            raise InvalidBody(f"the request body is not valid JSON: {error.detail}") from None


@cache
def _integer_queries(handler: HTTPRouteHandler) -> frozenset[str]:
    """The query parameters of a handler that are integers."""
    names = set()
    for field in handler.parsed_fn_signature.parameters.values():
        kwarg = field.kwarg_definition
        if isinstance(kwarg, ParameterKwarg) and (kwarg.header or kwarg.cookie):
            continue
        types = [inner.annotation for inner in field.inner_types] if field.is_union else [field.annotation]
        if int in types:
            names.add(kwarg.query if isinstance(kwarg, ParameterKwarg) and kwarg.query else field.name)
    return frozenset(names)


async def strict_parameters(request: Request[Any, Any, Any]) -> None:
    """Refuse integer query values that are not ASCII decimals, and NUL in path and query values."""
    integers = _integer_queries(request.route_handler)
    for name, value in request.query_params.multi_items():
        if name in integers and not _DECIMAL.fullmatch(value):
            raise ValidationException(f"query parameter {name!r} must be a decimal number (digits 0-9 only)")
    values = [value for _, value in request.query_params.multi_items()] + [*request.path_params.values()]
    if any(isinstance(value, str) and "\x00" in value for value in values):
        raise InvalidInput(NUL_MESSAGE)
