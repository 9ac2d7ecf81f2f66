"""Per-session stub keys for the LLM proxy.

A stub names its session and carries an HMAC of it under a secret only the platform holds, so
the proxy can tell which session sent a request without a lookup, and a stub is worthless
outside LAP (and for any other session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

PREFIX = "lapsk"


class StubKeys:
    """Issues and verifies stub keys of the form `lapsk.<session id>.<mac>`."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the stub key secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> StubKeys:
        """Load the secret from `path`, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def _mac(self, session_id: str) -> str:
        digest = hmac.new(self._secret, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def issue(self, session_id: str) -> str:
        """Return the stub key of a session (the same every time)."""
        return f"{PREFIX}.{session_id}.{self._mac(session_id)}"

    def verify(self, key: str) -> str | None:
        """Return the session id a stub key was issued for, or None if it is not a valid stub."""
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        session_id, mac = parts[1], parts[2]
        return session_id if hmac.compare_digest(mac, self._mac(session_id)) else None
