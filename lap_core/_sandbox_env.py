"""The environment operators put into sandboxes: `CONTAINER_ENV_` variables, and which names are LAP's.

Every platform variable `CONTAINER_ENV_X=v` is `X=v` in every sandbox (the seeds' passthrough),
below the harness's own variables and the secrets' stubs. The agent reads them: they are
configuration, never secrets (those go through `lap secrets`, and the agent sees only stubs).

Reserved names can be set neither that way nor as a secret's name: they are the sandbox's own
(`HOME`, `PATH`, `USER`), LAP's and the LLM gateway's (`LAP_*`, `LITELLM_*`), the harnesses'
stub keys and configuration, and the proxy and CA settings through which the egress gateway
routes every connection a sandbox makes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

CONTAINER_ENV_PREFIX = "CONTAINER_ENV_"
MAX_NAME = 128

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SANDBOX = frozenset({"HOME", "PATH", "USER"})
# Set by the harnesses (harnesses/*/): the stub keys, the proxy's address, the CLIs' homes and switches.
_HARNESSES = frozenset(
    {
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
        "IS_SANDBOX",
        "CODEX_HOME",
        "OPENCODE_CONFIG",
        "OPENCODE_CONFIG_DIR",
        "OPENCODE_DISABLE_AUTOUPDATE",
        "OPENCODE_DISABLE_MODELS_FETCH",
        "OPENCODE_DISABLE_LSP_DOWNLOAD",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS",
        "OPENCODE_DISABLE_SHARE",
    }
)
# How the egress gateway is reached and trusted: proxies, CA bundles, git's configuration.
_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
_EGRESS = frozenset(
    {
        *_PROXY_NAMES,
        *(name.lower() for name in _PROXY_NAMES),
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "PIP_CERT",
        "PIP_PROXY",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
    }
)
_NPM_EGRESS = re.compile(r"npm_config_(?:\w*proxy\w*|cafile|ca)", re.IGNORECASE)


def reserved_because(name: str) -> str | None:
    """Return why LAP keeps `name` to itself in sandboxes, or None if it is free."""
    if name in _SANDBOX:
        return "the sandbox's own (HOME, PATH, USER)"
    if name.startswith("LAP_"):
        return "LAP's (LAP_*)"
    if name.startswith("LITELLM_"):
        return "the LLM gateway's (LITELLM_*)"
    if name in _HARNESSES:
        return "a harness's stub key or configuration"
    if name in _EGRESS or name.startswith("GIT_CONFIG") or _NPM_EGRESS.fullmatch(name):
        return "the egress gateway's proxy and CA settings"
    return None


def name_problem(name: str) -> str | None:
    """Return what keeps `name` from being a variable LAP puts in sandboxes, or None if it may."""
    if not _VARIABLE_NAME.fullmatch(name) or len(name) > MAX_NAME:
        return (
            f"{name!r} is not an environment variable name: letters, digits and '_', not starting"
            f" with a digit, at most {MAX_NAME} characters"
        )
    reason = reserved_because(name)
    return f"{name} is reserved: {reason}" if reason else None


def container_environment(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Return the `CONTAINER_ENV_` passthrough (prefix stripped) and the problems by platform variable."""
    passed: dict[str, str] = {}
    problems: dict[str, str] = {}
    for variable, value in sorted(env.items()):
        if not variable.startswith(CONTAINER_ENV_PREFIX):
            continue
        name = variable.removeprefix(CONTAINER_ENV_PREFIX)
        problem = name_problem(name)
        if problem:
            problems[variable] = f"cannot be passed to sandboxes: {problem}"
        elif "\x00" in value:
            problems[variable] = "cannot be passed to sandboxes: a value may not contain NUL"
        else:
            passed[name] = value
    return passed, problems
