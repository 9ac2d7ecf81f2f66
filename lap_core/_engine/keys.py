"""Team API keys: `lapk_<prefix>_<secret>`, shown once when created; the store keeps the prefix and
a SHA-256 of the secret (32 random bytes: a slow hash buys nothing), never the secret itself."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from lap_core._errors import InvalidInput, NotFound
from lap_core._models import DEFAULT_TEAM_ID, ApiKey, new_id

if TYPE_CHECKING:
    from lap_core._store import SessionStore

KEY_PREFIX = "lapk"
MAX_NAME = 64


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """The API key operations of a running `Lap` (`lap.keys`)."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def create(self, name: str, *, team_id: str = DEFAULT_TEAM_ID) -> tuple[ApiKey, str]:
        """Create a key of the team; return its record and the key itself (shown once, never stored).

        Raise `NotFound` for an unknown team, `InvalidInput` for an empty or overlong name.
        """
        if not name.strip() or len(name) > MAX_NAME:
            raise InvalidInput(f"a key's name is 1 to {MAX_NAME} characters", details={"name": "required"})
        await self._store.get_team(team_id)
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = ApiKey(id=new_id("key"), team_id=team_id, name=name, prefix=prefix, secret_hash=_digest(secret))
        return await self._store.create_api_key(record), f"{KEY_PREFIX}_{prefix}_{secret}"

    async def list(self, *, team_id: str | None = DEFAULT_TEAM_ID) -> list[ApiKey]:
        """Return the team's keys (every team's with `team_id=None`), oldest first, never their secrets."""
        return await self._store.list_api_keys(team_id=team_id)

    async def delete(self, key_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> None:
        """Revoke a key at once (only the team's, unless `team_id` is None); raise `NotFound`."""
        await self._store.delete_api_key(key_id, team_id=team_id)

    async def authenticate(self, key: str) -> ApiKey | None:
        """Return the stored key that `key` (`lapk_<prefix>_<secret>`) is, or None (compared in constant time)."""
        kind, _, rest = key.partition("_")
        prefix, _, secret = rest.partition("_")
        if kind != KEY_PREFIX or not prefix or not secret:
            return None
        try:
            found = await self._store.find_api_key(prefix)
        except NotFound:
            return None
        return found if hmac.compare_digest(found.secret_hash, _digest(secret)) else None
