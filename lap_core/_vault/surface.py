"""The LLM API a stub key opens, and the request targets the proxy accepts.

A request target from a sandbox is hostile input. The upstream URL is the gateway's origin and
base path plus a target that passed `parse_target`: origin-form (`/path?query`), only the
characters the model APIs use, no empty, `.` or `..` segment, no percent-encoding. Anything else
(absolute-form, authority-form, `@`, `//`, backslashes, control bytes) is refused before a key
is looked at. Of the valid targets, only the routes the harnesses use are open (`LLM_ROUTES`).
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["LLM_QUERY", "LLM_ROUTES", "Route", "RouteError", "parse_target", "route_of"]

_PATH = re.compile(rb"/(?:[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)?")
_QUERY = re.compile(rb"[A-Za-z0-9_.=&-]*")

LLM_ROUTES: dict[tuple[str, str], bool] = {
    # (method, path without the optional /v1 prefix): whether the body must name a model.
    ("POST", "/chat/completions"): True,  # OpenAI chat completions (opencode)
    ("POST", "/responses"): True,  # OpenAI Responses (codex)
    ("POST", "/messages"): True,  # Anthropic Messages (claude-code)
    ("POST", "/messages/count_tokens"): True,  # Anthropic token counting (claude-code)
    ("GET", "/models"): False,  # the model list (answered by the proxy: the agent's own models)
}
"""The routes a stub key opens: the model APIs of the three bundled harnesses, and nothing else."""

LLM_QUERY: dict[str, re.Pattern[str]] = {"beta": re.compile(r"true|false")}
"""The query parameters those routes may carry (claude-code sends `?beta=true`), with their values."""


class RouteError(Exception):
    """The request is refused: `status` 400 (malformed target) or 403 (not part of the LLM API)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Route(msgspec.Struct, frozen=True):
    """A request target that passed: the path and query to forward, and whether a model is required."""

    path: str
    query: str
    needs_model: bool


def parse_target(target: bytes) -> tuple[str, str]:
    """Return (path, query) of an origin-form target; raise `RouteError(400)` for anything else."""
    path, _, query = target.partition(b"?")
    if not _PATH.fullmatch(path):
        raise RouteError(400, "the request target must be a plain origin-form path such as /v1/chat/completions")
    segments = path.split(b"/")[1:]
    if any(segment in (b".", b"..") for segment in segments):
        raise RouteError(400, "the request target must not contain '.' or '..' segments")
    if not _QUERY.fullmatch(query):
        raise RouteError(400, "the query may hold only letters, digits and _.=&-")
    return path.decode("ascii"), query.decode("ascii")


def route_of(method: bytes, target: bytes) -> Route:
    """Return the route of a request, or raise `RouteError` (400 malformed, 403 not opened)."""
    path, query = parse_target(target)
    name = method.decode("ascii", "replace")
    key = path.removeprefix("/v1") if path.startswith("/v1/") else path
    needs_model = LLM_ROUTES.get((name, key))
    if needs_model is None:
        raise RouteError(403, f"{name} {path} is not part of the LLM API this key opens")
    for pair in filter(None, query.split("&")):
        param, _, value = pair.partition("=")
        allowed = LLM_QUERY.get(param)
        if allowed is None or not allowed.fullmatch(value):
            raise RouteError(403, f"the query parameter {param!r} is not allowed")
    return Route(path, query, needs_model)
