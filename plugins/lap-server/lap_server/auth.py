"""Bearer authentication: `Authorization: Bearer <MASTER_KEY>` (admin). Team keys come with teams."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from litestar.exceptions import NotAuthorizedException

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

OPEN_PATHS = ("/healthz", "/readyz", "/schema")


def bearer_guard(master_key: str) -> Any:
    """Return a guard admitting requests with the master key (open paths excepted)."""
    expected = master_key.encode()

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if connection.url.path.startswith(OPEN_PATHS):
            return
        header = connection.headers.get("authorization", "")
        scheme, _separator, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise NotAuthorizedException("missing or invalid API key (Authorization: Bearer <key>)")

    return guard
