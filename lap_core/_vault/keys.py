"""Per-sandbox credentials of the LLM proxy: stub keys and sandbox identities.

Both name a session and the generation of its sandbox (bumped each time LAP makes the session a
new sandbox) and carry an HMAC of them under a secret only the platform holds, so the proxy can
tell who sent a request without a lookup, and neither is worth anything outside LAP:

- the **stub key** (`lapsk.<session>.<generation>.<mac>`) is what the harness sends as its API
  key; the agent can read it;
- the **identity** (`lapid.<session>.<generation>.<mac>`) is what sandboxd's forwarder sends
  first on every connection it makes to the proxy; it lives in sandboxd's memory only, so a
  connection that did not come through a sandbox's forwarder cannot claim to.

The proxy accepts a request only when the two agree and name the session's current generation:
a stub dies with its session and with its sandbox.

A **secret's stub** (`lapsec_` and 32 base32 characters) is what a sandbox's environment holds in
place of a secret's value: an HMAC of the session, the generation and the secret, so the egress
gateway recomputes the stubs of a connection's session to find them, and no stub says whose it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from pathlib import Path

STUB_PREFIX = "lapsk"
IDENTITY_PREFIX = "lapid"
SECRET_STUB_PREFIX = "lapsec_"


class SandboxGrant(msgspec.Struct, frozen=True):
    """Whom a stub key or identity was issued to: a session and its sandbox's generation."""

    session_id: str
    generation: int


class StubKeys:
    """Issues and verifies stub keys and sandbox identities."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the stub key secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> StubKeys:
        """Load the secret from `path`, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as file:
                    file.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def _mac(self, prefix: str, grant: SandboxGrant) -> str:
        message = f"{prefix}.{grant.session_id}.{grant.generation}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def _issue(self, prefix: str, session_id: str, generation: int) -> str:
        grant = SandboxGrant(session_id, generation)
        return f"{prefix}.{session_id}.{generation}.{self._mac(prefix, grant)}"

    def _verify(self, prefix: str, value: str) -> SandboxGrant | None:
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != prefix or not parts[2].isascii() or not parts[2].isdigit():
            return None
        if len(parts[2]) > 18:
            return None
        grant = SandboxGrant(parts[1], int(parts[2]))
        return grant if hmac.compare_digest(parts[3].encode(), self._mac(prefix, grant).encode()) else None

    def issue(self, session_id: str, generation: int) -> str:
        """Return the stub key of a session's sandbox (the same for the same generation)."""
        return self._issue(STUB_PREFIX, session_id, generation)

    def verify(self, key: str) -> SandboxGrant | None:
        """Return whom a stub key was issued to, or None if it is not a valid stub."""
        return self._verify(STUB_PREFIX, key)

    def identity(self, session_id: str, generation: int) -> str:
        """Return the identity sandboxd's forwarder presents for a session's sandbox."""
        return self._issue(IDENTITY_PREFIX, session_id, generation)

    def secret_stub(self, session_id: str, generation: int, secret_id: str) -> str:
        """Return the stub a session's sandbox holds for a secret (the same for the same generation)."""
        message = f"{SECRET_STUB_PREFIX}.{session_id}.{generation}.{secret_id}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return SECRET_STUB_PREFIX + base64.b32encode(digest[:20]).decode().lower()

    def verify_identity(self, value: str) -> SandboxGrant | None:
        """Return whom an identity was issued to, or None if it is not valid."""
        return self._verify(IDENTITY_PREFIX, value)
