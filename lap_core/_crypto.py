"""Encryption at rest: AES-256-GCM under `ENCRYPTION_KEY`, for the secrets LAP keeps in its store.

A blob is a version byte, a random 96-bit nonce and the ciphertext with its tag. The caller's
`context` (a secret's id and team, say) is authenticated with it as associated data: a blob
copied into another row does not decrypt there.

The key is 32 bytes, given in base64 or hex. Unset, development gets a key file kept in the data
directory (with a warning: every process sharing the store needs the same key) and production
(`LAP_ENV=production`) refuses to start.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lap_core._errors import ConfigError, LapError

if TYPE_CHECKING:
    from pathlib import Path

    from lap_core._config import CoreSettings

log = structlog.get_logger("lap")

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
KEY_FILE = "secrets/encryption.key"
"""Where the development key is kept, under the data directory."""
MAKE_A_KEY = "make one with `openssl rand -base64 32`"

_HEX = re.compile(r"[0-9a-fA-F]{64}")


class DecryptionError(LapError):
    """A blob did not decrypt: another key, another context, or changed bytes."""

    code = "decryption_failed"


class Cipher:
    """Encrypts and decrypts blobs with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an encryption key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def encrypt(self, data: bytes, *, context: bytes) -> bytes:
        """Return `data` sealed under the key, bound to `context` (needed again to decrypt)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, data, VERSION + context)

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        """Return the data of a blob `encrypt` made with the same key and context; else `DecryptionError`."""
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
            raise DecryptionError("cannot decrypt: not a blob of this version")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, VERSION + context)
        except InvalidTag:
            raise DecryptionError(
                "cannot decrypt: it was encrypted under another ENCRYPTION_KEY, for another record, or changed"
            ) from None


def parse_key(text: str) -> bytes:
    """Return the 32 bytes of a key written in hex or base64 (standard or URL-safe); else `ValueError`."""
    text = text.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not hex or base64: it must be {KEY_BYTES} random bytes ({MAKE_A_KEY})") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{len(key)} bytes once decoded, not {KEY_BYTES} ({MAKE_A_KEY})")
    return key


def key_problems(settings: CoreSettings) -> dict[str, str]:
    """Return what is wrong with the key settings, by variable name (empty when LAP can encrypt)."""
    if settings.encryption_key:
        try:
            parse_key(settings.encryption_key)
        except ValueError as error:
            return {"ENCRYPTION_KEY": str(error)}
    elif settings.lap_env == "production":
        return {"ENCRYPTION_KEY": f"required when LAP_ENV=production: 32 random bytes, base64 or hex ({MAKE_A_KEY})"}
    return {}


def _key_file(path: Path) -> tuple[bytes, bool]:
    """Return the key kept in `path` and whether it was made now."""
    made = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as file:
                file.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
            made = True
    try:
        return parse_key(path.read_text()), made
    except ValueError as error:
        raise ConfigError({"ENCRYPTION_KEY": f"unset, and the key file {path} is unusable: {error}"}) from None


def cipher_from(settings: CoreSettings, data_dir: Path) -> Cipher:
    """Return the cipher of `ENCRYPTION_KEY`, or (development only) of the key file in `data_dir`.

    The key file is announced with a warning when it is made, and on every start with a shared
    database (`DATABASE_URL`), whose other processes would each make keys of their own. Raise
    `ConfigError` for a malformed key, or none in production.
    """
    problems = key_problems(settings)
    if problems:
        raise ConfigError(problems)
    if settings.encryption_key:
        return Cipher(parse_key(settings.encryption_key))
    path = data_dir / KEY_FILE
    key, made = _key_file(path)
    (log.warning if made or settings.database_url else log.info)(
        "encryption.key_file",
        hint="ENCRYPTION_KEY is unset: secrets are encrypted with a development key file;"
        " in production set ENCRYPTION_KEY (the same in every process; this file's content keeps them readable)",
        path=str(path),
    )
    return Cipher(key)
