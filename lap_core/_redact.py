"""Secrets out of every log line (issue 12, finding 3), whatever the format, level or source.

Two layers, both cheap enough to run on every line (`bench/log_redaction.py` measures them):

- `mask_credentials` walks a log event before it is rendered: the value of any key that names a
  credential (`authorization`, `x-api-key`, `cookie`, `*_token`, `password` ...), at any depth
  and in `(name, value)` pairs such as ASGI's raw headers, becomes `MASK`.
- `redact_text` scrubs each rendered line: every secret registered with `register_secret`
  (and its JSON- and repr-escaped forms), LAP team keys (`lapk_<prefix>_<secret>` keeps its
  public prefix), sandbox stub keys, identities and secrets' stubs (`lapsk.`, `lapid.`, `lapsec_`), `Bearer`/`Basic`
  credentials and credential headers written out in text (a repr of headers, an exception's message).

The runtime registers the secrets of its environment at start-up (`register_environment`);
whatever else holds a secret registers it with `register_secret(value)`.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

MASK = "***"
MIN_SECRET_LENGTH = 8
"""Shorter values are not registered: masking every occurrence of a short string would garble the logs."""

# Environment variables whose values are secrets: the ones LAP reads, and any named like one.
_SECRET_VARIABLES = frozenset({"MASTER_KEY", "LITELLM_API_KEY", "ENCRYPTION_KEY"})
_SECRET_VARIABLE_NAME = re.compile(r"(?:^|_)(?:API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")

_SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "x_api_key",
        "api_key",
        "apikey",
        "cookie",
        "set_cookie",
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "bearer",
        "credentials",
    }
)
_SENSITIVE_SUFFIXES = (
    "_token",
    "_secret",
    "_password",
    "_passwd",
    "_api_key",
    "_apikey",
    "_credentials",
    "master_key",
    "encryption_key",
    "private_key",
)

# Credentials recognised in text, by a word that starts them and what follows it (whose group
# `secret` is masked). Words are found with `str.find` in the lowercased line and the rest matched
# right there: a search with an alternation of words is ~20x slower in `re`.
_KEY_CHARS = r"[a-z0-9._~+/=-]+"
_HEADER_VALUE = re.compile(  # `name: value`, `'name': 'value'`, `(b'name', b'value')`, `\"name\": \"value\"`
    r"\\?['\"]?\s*[:=,]\s*(?:b?(?P<quote>\\?['\"]))?"
    r"(?P<secret>(?(quote)[^'\"\\\r\n]+|(?:(?:bearer|basic)\s+)?[^\s'\",;&)}\]]+))"
)
_SCHEME_VALUE = re.compile(rf"\s+(?P<secret>{_KEY_CHARS})")
_FOLLOWERS = {
    "lapk_": re.compile(r"[a-z0-9-]{1,64}_(?P<secret>[a-z0-9_-]+)"),  # a team key keeps its public prefix
    "lapsk.": re.compile(rf"(?P<secret>{_KEY_CHARS})"),  # a sandbox's stub key
    "lapid.": re.compile(rf"(?P<secret>{_KEY_CHARS})"),  # a sandbox's identity (sandboxd's forwarder's)
    "lapsec_": re.compile(r"(?P<secret>[a-z2-7]+)"),  # a secret's stub in a sandbox
    "bearer": _SCHEME_VALUE,
    "basic": _SCHEME_VALUE,
    "authorization": _HEADER_VALUE,  # and proxy-authorization
    "api-key": _HEADER_VALUE,  # and x-api-key
    "api_key": _HEADER_VALUE,
    "cookie": _HEADER_VALUE,  # and set-cookie
}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (None, and values under 8 characters, are ignored).

    Call it where a secret enters the process: `lap_core` registers MASTER_KEY, LITELLM_API_KEY,
    ENCRYPTION_KEY and the database password of its environment (`register_environment`).
    """
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}  # as JSON and repr() write it
    with _lock:
        known = set(_secrets)
        if forms <= known:
            return
        # Longest first: a secret that contains another is masked whole.
        _secrets = tuple(sorted(known | forms, key=len, reverse=True))


def register_environment(env: Mapping[str, str]) -> None:
    """Register the secrets of an environment: LAP's keys, variables named like secrets, the database password."""
    for name, value in env.items():
        if name in _SECRET_VARIABLES or _SECRET_VARIABLE_NAME.search(name):
            register_secret(value)
    url = env.get("DATABASE_URL")
    if url:
        try:
            password = urlsplit(url).password
        except ValueError:  # not a URL at all: the runtime reports it
            password = None
        if password:
            register_secret(password)
            register_secret(unquote(password))


def _mask_credentials_in(text: str, lowered: str) -> str:
    if len(lowered) != len(text):  # a character lowercased to two: positions would not carry over
        lowered = text.translate(_ASCII_LOWER)
    spans = []
    for word, follower in _FOLLOWERS.items():
        at = lowered.find(word)
        while at >= 0:
            at += len(word)
            if match := follower.match(lowered, at):
                spans.append(match.span("secret"))
            at = lowered.find(word, at)
    if not spans:
        return text
    pieces: list[str] = []
    done = 0
    for start, end in sorted(spans):  # overlapping spans (a bearer token in an authorization header) mask once
        if end > done:
            pieces += (text[done : max(start, done)], MASK)
            done = end
    return "".join(pieces) + text[done:]


def redact_text(text: str) -> str:
    """Return `text` with every registered secret and every recognisable credential masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    for word in _FOLLOWERS:  # most lines hold none of the words: this is all they cost
        if word in lowered:
            return _mask_credentials_in(text, lowered)
    return text


_plain_names: set[str] = set()
"""Names found not to name a credential: log lines use few distinct keys, so each is worked out once."""
_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (dict, list, tuple)


def _sensitive(name: str) -> bool:
    if name in _plain_names:
        return False
    normal = name.lower().replace("-", "_")
    if normal in _SENSITIVE_NAMES or normal.endswith(_SENSITIVE_SUFFIXES):
        return True
    if len(_plain_names) < 4096:
        _plain_names.add(name)
    return False


def _name(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return None


def _mask_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and _sensitive(k) else _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) == 2 and (name := _name(value[0])) is not None and _sensitive(name):
            return (value[0], MASK)  # a header pair
        masked = [_mask_value(item) for item in value]
        return masked if isinstance(value, list) else tuple(masked)
    return value


def mask_credentials(logger: object, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the values of credential-named keys, at any depth of the event."""
    for key, value in event.items():
        if key not in _plain_names and _sensitive(key):
            event[key] = MASK
        elif type(value) not in _PLAIN_VALUES and isinstance(value, _CONTAINERS):
            event[key] = _mask_value(value)
    return event
