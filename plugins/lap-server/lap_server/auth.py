"""Who is calling: the master key (an admin, every team) or a team API key (that team only).

A team key (`lapk_<prefix>_<secret>`) is checked by the engine (`lap.keys.authenticate`).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.exceptions import NotAuthorizedException

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from lap_core import Lap

OPEN_PATHS = ("/healthz", "/readyz", "/schema")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller: `team_id` None means the admin (master key), who sees every team.

    `key_prefix` is a team key's public part: what logs and rate limits name the caller by.
    """

    team_id: str | None
    key_id: str | None = None
    key_prefix: str | None = None


async def principal_of(lap: Lap, master: bytes, token: str) -> Principal | None:
    """The caller a key names: the master key, a stored team key, or None (no such key)."""
    if hmac.compare_digest(token.encode(), master):
        return Principal(team_id=None)
    key = await lap.keys.authenticate(token)
    return None if key is None else Principal(team_id=key.team_id, key_id=key.id, key_prefix=key.prefix)


def auth_guard(lap: Lap, master_key: str) -> Any:
    """Return a guard that admits the master key or a team key, and records the `Principal`.

    Routes whose `opt` has `dashboard` are left to the dashboard's own guard (a session cookie),
    and those whose `opt` has `exclude_from_auth` (a plugin's webhook, which checks its own
    signature) to themselves.
    """
    master = master_key.encode()

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        opt = handler.opt
        if connection.url.path.startswith(OPEN_PATHS) or opt.get("dashboard") or opt.get("exclude_from_auth"):
            return
        scheme, _separator, token = connection.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            principal = await principal_of(lap, master, token)
            if principal is not None:
                connection.state.principal = principal
                return
        raise NotAuthorizedException("missing or invalid API key (Authorization: Bearer <key>)")

    return guard
