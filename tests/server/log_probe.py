"""A plugin for `test_log_secrets.py`, loaded by a `lap serve` subprocess: routes that fail and log carelessly.

Each route does what careless code (ours, a library's) does with a request's credentials: fails
with them in its frames' locals, puts them in an exception's message, logs the headers whole,
through structlog and through the standard library. The logging layer must mask them all.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import structlog
from litestar import Request, get

from lap_core import hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.handlers import HTTPRouteHandler

log = structlog.get_logger("lap.probe")
stdlib_log = logging.getLogger("probe.library")


class _ProbeError(Exception):
    pass


@get("/probe/boom")
async def boom(request: Request[Any, Any, Any]) -> None:
    """An unexpected 500, the request (its scope, its headers) in the frames' locals."""
    scope, headers = request.scope, dict(request.headers)
    raise _ProbeError(f"unexpected failure (scope of {len(scope)} keys, {len(headers)} headers)")


@get("/probe/leak")
async def leak(request: Request[Any, Any, Any]) -> None:
    """A 500 whose message holds the credentials, as a library's error might (the gateway key too)."""
    gateway_key = os.environ["LITELLM_API_KEY"]
    raise _ProbeError(
        f"upstream refused {request.headers.get('authorization')} with key {gateway_key};"
        f" raw headers {request.scope['headers']!r}"
    )


@get("/probe/log")
async def log_everything(request: Request[Any, Any, Any]) -> dict[str, bool]:
    """Log the credentials at every level, in every shape, through structlog and the standard library."""
    raw = request.scope["headers"]
    headers = dict(request.headers)
    gateway = {"x-api-key": os.environ["LITELLM_API_KEY"], "Authorization": f"Bearer {os.environ['LITELLM_API_KEY']}"}
    log.debug("probe.headers", headers=headers, raw=raw, upstream={"request": {"headers": gateway}})
    log.info("probe.auth", authorization=headers.get("authorization"), detail=f"sent {headers}")
    log.warning("probe.text", line=f"GET / HTTP/1.1\r\nAuthorization: {headers.get('authorization')}\r\n")
    try:
        raise _ProbeError(f"with {raw!r}")
    except _ProbeError:
        log.error("probe.failed", exc_info=True)
        stdlib_log.exception("library failed with headers %s and %r", headers, gateway)
    stdlib_log.debug("library request headers: %s", raw)
    return {"logged": True}


class LogProbePlugin:
    """Adds the probe routes."""

    @hookimpl
    def lap_server_routes(self) -> Iterator[HTTPRouteHandler]:
        yield from (boom, leak, log_everything)


plugin = LogProbePlugin()
"""The entry point `test_log_secrets.py` declares."""
