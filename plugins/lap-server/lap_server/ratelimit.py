"""Per-caller rate limits: a token bucket per key, in this web process's memory.

The caller is named by what is public about it: `master` for the master key, `key:<prefix>` for
a team key, `ip:<address>` for everyone else (open routes, and failed authentications, which
count against the address). Limits are per web process: N processes allow N times the limit.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from litestar.exceptions import NotAuthorizedException, TooManyRequestsException

from lap_server.auth import Principal
from lap_server.errors import error_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from litestar import Request, Response
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler
    from prometheus_client import Counter

    Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

WINDOW = 60.0  # the limit is given per minute


class RateLimiter:
    """Token buckets of `per_minute` tokens each, refilled continuously (so bursts up to `per_minute`)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._rate = per_minute / WINDOW
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, when counted)
        self._pruned = clock()

    def take(self, identity: str) -> float:
        """Take a token for `identity`: return 0 if granted, else the seconds until one is available."""
        now = self._clock()
        self._prune(now)
        tokens, counted = self._buckets.get(identity, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - counted) * self._rate)
        if tokens < 1:
            self._buckets[identity] = (tokens, now)
            return (1 - tokens) / self._rate
        self._buckets[identity] = (tokens - 1, now)
        return 0.0

    def _prune(self, now: float) -> None:
        # A bucket left alone for a whole window is full again, the same as no bucket: forget it,
        # so callers that went away (client addresses above all) cost no memory.
        if now - self._pruned < WINDOW:
            return
        self._pruned = now
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if now - bucket[1] < WINDOW}


class RateLimited(TooManyRequestsException):
    """Refused for now: `retry_after` seconds until the caller has a request again."""

    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(detail=f"rate limit of {limit} requests a minute exceeded; retry in {retry_after} s")
        self.retry_after = retry_after
        self.limit = limit


def rate_limited_response(request: Request[Any, Any, Any], error: RateLimited) -> Response[Any]:
    """429 in the API's error shape, with `Retry-After`."""
    details = {"limit": error.limit, "window_seconds": int(WINDOW), "retry_after": error.retry_after}
    response = error_response(429, "rate_limited", str(error.detail), details)
    response.headers["Retry-After"] = str(error.retry_after)
    return response


def identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The caller's public name: never the key itself."""
    principal = connection.state.get("principal")
    if isinstance(principal, Principal):
        return "master" if principal.team_id is None else f"key:{principal.key_prefix}"
    return f"ip:{connection.client.host if connection.client else 'unknown'}"


def rate_limit_guard(auth: Guard, limiter: RateLimiter, refused: Counter) -> Guard:
    """Wrap the auth guard: authenticate, then take a token from the caller's bucket.

    Failed authentications take from the client address's bucket, so guessing keys is limited too.
    A guard runs once per request: a long-lived SSE stream counts once, when it opens.
    """

    def take(name: str) -> None:
        wait = limiter.take(name)
        if wait:
            refused.labels(kind=name.partition(":")[0]).inc()
            raise RateLimited(max(1, math.ceil(wait)), limiter.per_minute)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        try:
            await auth(connection, handler)
        except NotAuthorizedException:
            take(identity(connection))
            raise
        take(identity(connection))

    return guard
