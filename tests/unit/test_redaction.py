"""Secrets are masked in every log line: the redaction itself, and LAP's logging set-up in both formats."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from lap_core import configure_logging as configure
from lap_core._redact import MASK, mask_credentials, redact_text, register_environment, register_secret

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "registered-Secret-4f9a"
ODD = 'quote"back\\slash-é-secret'  # JSON and repr() write it escaped
TEAM_KEY = "lapk_0123456789ab_Zm9v-YmFy_YmF6LXF1eC1xdXV4LWNvcmdl"
STUB = "lapsk.ses_abc123.kZ0v-Ew_Q1xZZ9"


@pytest.fixture(autouse=True)
def registered() -> None:
    register_secret(SECRET)
    register_secret(ODD)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {SECRET} rejected", f"key {MASK} rejected"),
        (f"x{SECRET}{SECRET}y", f"x{MASK}{MASK}y"),
        (json.dumps({"v": ODD}), f'{{"v": "{MASK}"}}'),
        (repr({"v": ODD}), f"{{'v': '{MASK}'}}"),
        (f"team key {TEAM_KEY}.", f"team key lapk_0123456789ab_{MASK}."),  # the public prefix stays
        (f"stub={STUB} end", f"stub=lapsk.{MASK} end"),
        ("LAP-SANDBOX lapid.ses_abc.2.kZ0v-Ew_Q1", f"LAP-SANDBOX lapid.{MASK}"),
        ("GH_TOKEN=lapsec_55pemlloavajzwwnlxg6hing3wok2x7m sent", f"GH_TOKEN=lapsec_{MASK} sent"),  # a secret's stub
        ("Authorization: Bearer abc.def-ghi", f"Authorization: {MASK}"),
        ("proxy-authorization: Basic dXNlcjpwdw== next", f"proxy-authorization: {MASK} next"),
        ("sent bearer tok_123/456= to", f"sent bearer {MASK} to"),
        ("x-api-key: sk-unknown-1 rest", f"x-api-key: {MASK} rest"),
        ("{'X-Api-Key': 'sk 1', 'host': 'h'}", f"{{'X-Api-Key': '{MASK}', 'host': 'h'}}"),
        ("[(b'authorization', b'Bearer q'), (b'host', b'h')]", f"[(b'authorization', b'{MASK}'), (b'host', b'h')]"),
        ('{\\"cookie\\": \\"s=1\\"}', f'{{\\"cookie\\": \\"{MASK}\\"}}'),  # JSON inside a JSON string
        ("Set-Cookie=abc; Path=/", f"Set-Cookie={MASK}; Path=/"),
        ("api_key=sk-x&model=m", f"api_key={MASK}&model=m"),
        ("İ is two once lowercased; AUTHORIZATION: BEARER X1 İ", f"İ is two once lowercased; AUTHORIZATION: {MASK} İ"),
        # Ordinary lines stay as they are.
        ("http.request key_prefix=0123456789ab status=401", "http.request key_prefix=0123456789ab status=401"),
        ("tokens used: 12; basically fine; a cookie jar", "tokens used: 12; basically fine; a cookie jar"),
        ("lapk_ alone and lapsk without a dot", "lapk_ alone and lapsk without a dot"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_short_values_are_not_registered() -> None:
    register_secret("k")
    register_secret("")
    register_secret(None)
    assert redact_text("keep k and kk") == "keep k and kk"


def test_the_environment_registers_keys_and_the_database_password() -> None:
    register_environment(
        {
            "MASTER_KEY": "env-master-key-1",
            "LITELLM_API_KEY": "env-gateway-key-2",
            "ENCRYPTION_KEY": "env-encryption-key-3",
            "GITHUB_TOKEN": "env-github-token-4",
            "DATABASE_URL": "postgresql://lap:pass%2Fword-5@db:5432/lap",
            "LAP_PORT": "30000000",
            "HOME": "/root/home-directory",
        }
    )
    line = "env-master-key-1 env-gateway-key-2 env-encryption-key-3 env-github-token-4 pass/word-5 pass%2Fword-5"
    assert redact_text(line) == " ".join([MASK] * 6)
    assert redact_text("port 30000000 in /root/home-directory") == "port 30000000 in /root/home-directory"


def test_credentials_are_masked_at_any_depth_of_an_event() -> None:
    event: dict[str, Any] = {
        "event": "proxy.request",
        "authorization": "Bearer abc",
        "X-Api-Key": "sk-1",
        "headers": {"Cookie": "s=1", "Accept": "*/*", "nested": {"api_key": "sk-2", "access_token": "t"}},
        "scope": {"headers": [(b"authorization", b"Bearer x"), (b"host", b"h"), (b"X-API-KEY", b"sk-3")]},
        "pairs": [("set-cookie", "a=b"), ["password", "pw"], ("name", "value")],
        "key_prefix": "0123456789ab",
        "input_tokens": 12,
        "idempotency_key": "msg-1",
    }
    assert mask_credentials(None, "info", event) == {
        "event": "proxy.request",
        "authorization": MASK,
        "X-Api-Key": MASK,
        "headers": {"Cookie": MASK, "Accept": "*/*", "nested": {"api_key": MASK, "access_token": MASK}},
        "scope": {"headers": [(b"authorization", MASK), (b"host", b"h"), (b"X-API-KEY", MASK)]},
        "pairs": [("set-cookie", MASK), ("password", MASK), ("name", "value")],
        "key_prefix": "0123456789ab",
        "input_tokens": 12,
        "idempotency_key": "msg-1",
    }


def _fail_holding(credential: str) -> None:
    hidden_local = f"local-only-{credential}"  # never registered: only "no locals" keeps it out
    raise RuntimeError(f"upstream refused {SECRET} and {TEAM_KEY} ({len(hidden_local)})")


@pytest.mark.parametrize("json_lines", [False, True], ids=["console", "json"])
def test_logged_lines_hold_no_secret_in_either_format(
    json_lines: bool, logging_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(level=logging.DEBUG, json=json_lines)
    log = structlog.get_logger("lap.test")
    try:
        _fail_holding("abcdefgh")
    except RuntimeError:
        log.exception("structlog.failed", headers={"authorization": "Bearer zzz"}, detail=f"with {SECRET}")
        logging.getLogger("some.library").exception("library failed: x-api-key: %s", "sk-lib-1")
    logging.getLogger("some.library").debug("raw %r", [(b"cookie", b"session=1")])
    log.debug("structlog.debug", scope={"headers": [(b"x-api-key", ODD.encode())]}, key=TEAM_KEY)

    err = capsys.readouterr().err
    for secret in (SECRET, ODD, TEAM_KEY, "local-only-", "zzz", "sk-lib-1", "session=1", "Zm9v"):
        assert secret not in err, (secret, err)
    assert err.count("RuntimeError: upstream refused *** and lapk_0123456789ab_***") == 2
    for event in ("structlog.failed", "library failed", "raw", "structlog.debug"):
        assert event in err
    if json_lines:
        records = [json.loads(line) for line in err.splitlines()]
        assert [r["level"] for r in records] == ["error", "error", "debug", "debug"]
        assert records[1]["logger"] == "some.library"
        assert "Traceback" in records[1]["exception"]
