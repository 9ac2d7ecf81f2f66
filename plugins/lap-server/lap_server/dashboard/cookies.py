"""The dashboard's login session: a cookie signed with a key derived from the master key, and CSRF tokens.

The cookie holds who logged in (the admin, or a team key's id, prefix and team: never a key's
secret), a random nonce and an expiry, signed with HMAC-SHA256 under `HMAC(MASTER_KEY, purpose)`.
A team key's session ends as soon as the key is deleted (each request looks the key up again);
changing `MASTER_KEY` ends every session. The CSRF token of a session is an HMAC of its nonce,
so it needs no storage; the login form's token is an HMAC of a nonce in a short-lived cookie of
its own (double submit, signed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from lap_server.auth import Principal

SESSION_SECONDS = 12 * 3600
"""How long a login lasts (there is no refresh: log in again after)."""
LOGIN_SECONDS = 3600
"""How long a login form stays usable."""


class Login(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What the session cookie says: who, until when (Unix seconds), and the nonce CSRF tokens derive from."""

    team_id: str | None
    key_id: str | None
    key_prefix: str | None
    nonce: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks the dashboard's cookies and CSRF tokens with a key derived from the master key."""

    def __init__(self, master_key: str) -> None:
        self._key = hmac.new(master_key.encode(), b"lap-dashboard-v1", hashlib.sha256).digest()

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()

    def new_login(self, principal: Principal) -> tuple[Login, str]:
        """A fresh login for `principal`, and its cookie value."""
        login = Login(
            team_id=principal.team_id,
            key_id=principal.key_id,
            key_prefix=principal.key_prefix,
            nonce=secrets.token_urlsafe(18),
            expires=int(time.time()) + SESSION_SECONDS,
        )
        payload = msgspec.json.encode(login)
        return login, f"{_b64(payload)}.{_b64(self._mac('session', payload))}"

    def read_login(self, cookie: str | None) -> Login | None:
        """The login a cookie holds, or None (absent, forged, malformed or expired)."""
        if not cookie or len(cookie) > 1024:
            return None
        payload_text, _, mac_text = cookie.partition(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            login = msgspec.json.decode(payload, type=Login)
        except msgspec.DecodeError:
            return None
        return login if login.expires > time.time() else None

    def csrf(self, nonce: str) -> str:
        """The CSRF token of the session (or login form) with this nonce."""
        return _b64(self._mac("csrf", nonce.encode()))

    def check_csrf(self, nonce: str | None, token: object) -> bool:
        """Whether `token` is the CSRF token of `nonce`."""
        return bool(nonce) and isinstance(token, str) and hmac.compare_digest(token, self.csrf(nonce or ""))
