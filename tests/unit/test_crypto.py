"""Encryption at rest (lap_core._crypto): AES-256-GCM bound to a context, and where the key comes from."""

from __future__ import annotations

import base64
import secrets
import stat
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from lap_core import ConfigError, Lap
from lap_core._config import CoreSettings
from lap_core._crypto import KEY_FILE, Cipher, DecryptionError, cipher_from, parse_key

if TYPE_CHECKING:
    from pathlib import Path

KEY = secrets.token_bytes(32)
DATA = b"ghp_the-real-token\x00\xff and more"


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    cipher = Cipher(KEY)
    first, second = (cipher.encrypt(DATA, context=b"sec_1") for _ in range(2))
    assert first != second  # a random nonce: the same data never looks the same
    assert DATA not in first
    assert first[:1] == b"\x01"  # the version byte
    assert len(first) == 1 + 12 + len(DATA) + 16  # version, nonce, ciphertext, tag
    assert cipher.decrypt(first, context=b"sec_1") == DATA
    assert Cipher(KEY).decrypt(second, context=b"sec_1") == DATA  # the key is all it needs
    assert cipher.decrypt(cipher.encrypt(b"", context=b""), context=b"") == b""


def test_another_key_fails() -> None:
    blob = Cipher(KEY).encrypt(DATA, context=b"sec_1")
    with pytest.raises(DecryptionError, match="another ENCRYPTION_KEY"):
        Cipher(secrets.token_bytes(32)).decrypt(blob, context=b"sec_1")


def test_another_context_fails() -> None:
    cipher = Cipher(KEY)
    blob = cipher.encrypt(DATA, context=b"sec_1")
    for context in (b"sec_2", b"", b"sec_1 "):
        with pytest.raises(DecryptionError):
            cipher.decrypt(blob, context=context)


@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_a_changed_byte_fails(position: int) -> None:
    cipher = Cipher(KEY)
    blob = bytearray(cipher.encrypt(DATA, context=b"c"))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(blob), context=b"c")


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + bytes(27), b"\x02" + bytes(40)])
def test_short_or_unknown_blobs_fail(blob: bytes) -> None:
    with pytest.raises(DecryptionError):
        Cipher(KEY).decrypt(blob, context=b"c")


def test_a_key_is_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Cipher(b"short")


@pytest.mark.parametrize(
    "text",
    [
        KEY.hex(),
        KEY.hex().upper(),
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode(),
        base64.b64encode(KEY).decode().rstrip("="),
        f"  {KEY.hex()}\n",
    ],
    ids=["hex", "HEX", "base64", "urlsafe", "unpadded", "spaces"],
)
def test_key_formats(text: str) -> None:
    assert parse_key(text) == KEY


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("change-me", "not hex or base64"),
        (base64.b64encode(secrets.token_bytes(16)).decode(), "16 bytes once decoded"),
        (secrets.token_bytes(31).hex(), "bytes once decoded, not 32"),
        ("z" * 64, "bytes once decoded, not 32"),
    ],
)
def test_bad_keys_say_how_to_make_one(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_key(text)
    assert "openssl rand -base64 32" in str(caught.value)


def test_the_key_comes_from_encryption_key(tmp_path: Path) -> None:
    settings = CoreSettings(encryption_key=base64.b64encode(KEY).decode(), lap_env="production")
    blob = cipher_from(settings, tmp_path).encrypt(DATA, context=b"c")
    assert Cipher(KEY).decrypt(blob, context=b"c") == DATA
    assert not (tmp_path / KEY_FILE).exists()


def _key_file_levels(logs: list[dict[str, Any]]) -> list[Any]:
    return [line["log_level"] for line in logs if line["event"] == "encryption.key_file"]


def test_development_keeps_a_key_file_and_warns(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        first = cipher_from(CoreSettings(), tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(parse_key(path.read_text())) == 32  # a key an operator can copy into ENCRYPTION_KEY
    assert _key_file_levels(logs) == ["warning"]
    assert "ENCRYPTION_KEY is unset" in str(logs)
    blob = first.encrypt(DATA, context=b"c")
    with structlog.testing.capture_logs() as logs:
        again = cipher_from(CoreSettings(), tmp_path)  # the same key next time, said more quietly ...
    assert again.decrypt(blob, context=b"c") == DATA
    assert _key_file_levels(logs) == ["info"]
    with structlog.testing.capture_logs() as logs:  # ... unless other processes share the database
        cipher_from(CoreSettings(database_url="postgresql://db/lap"), tmp_path)
    assert _key_file_levels(logs) == ["warning"]
    assert Cipher(parse_key(path.read_text())).decrypt(blob, context=b"c") == DATA


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        cipher_from(CoreSettings(lap_env="production"), tmp_path)
    assert "required when LAP_ENV=production" in caught.value.problems["ENCRYPTION_KEY"]
    assert not (tmp_path / KEY_FILE).exists()


def test_an_unusable_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / KEY_FILE).write_text("not a key")
    with pytest.raises(ConfigError, match="key file"):
        cipher_from(CoreSettings(), tmp_path)


@pytest.mark.anyio
async def test_lap_reports_key_problems_with_the_rest(tmp_path: Path) -> None:
    env = {"LAP_DATA_DIR": str(tmp_path), "LAP_ENV": "production", "LAP_TURN_TIMEOUT": "soon"}
    with pytest.raises(ConfigError) as caught:
        async with Lap(env=env, run_turns=False):
            pass
    assert set(caught.value.problems) == {"ENCRYPTION_KEY", "LAP_TURN_TIMEOUT"}
    env = {"LAP_DATA_DIR": str(tmp_path), "ENCRYPTION_KEY": "too-short", "LAP_ENV": "staging"}
    with pytest.raises(ConfigError) as caught:
        async with Lap(env=env, run_turns=False):
            pass
    assert set(caught.value.problems) == {"ENCRYPTION_KEY", "LAP_ENV"}
    assert "too-short" not in caught.value.message  # a key, even a bad one, is never shown
