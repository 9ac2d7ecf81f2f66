"""Configuration from the environment (and a `.env` file), validated all at once.

Each settings struct names its fields after the environment variables they read
(`rename="upper"`: the field `litellm_api_base` reads `LITELLM_API_BASE`). A struct may give a
field a second name (the seeds' name of the same setting) in its `env_aliases` class variable;
setting both to different values is a problem. `load_settings` validates every struct of the
selected components together and raises one `ConfigError` that lists every failing key.
Every variable is documented in docs/configuration.md and .env.example (tests/unit/test_docs.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar, get_args

import msgspec
from dotenv import dotenv_values

from lap_core._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

S = TypeVar("S", bound=msgspec.Struct)

HostPort = Annotated[
    str, msgspec.Meta(pattern=r"^(\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+):[0-9]{1,5}$", description="HOST:PORT")
]
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+(/\S*)?$", description="an http(s) URL")]
EgressHosts = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\s*[A-Za-z0-9.-]+=[0-9A-Fa-f.:|]+\s*(,\s*[A-Za-z0-9.-]+=[0-9A-Fa-f.:|]+\s*)*$",
        description="name=address[|address],...",
    ),
]
# A repository to clone over HTTP(S), through the egress gateway; credentials belong in a secret, not the URL.
RepositoryUrl = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/-]*[A-Za-z0-9_~-](\.git)?/?$",
        max_length=2048,
        description="a repository's http(s) URL, without credentials, query or fragment",
    ),
]
Count = Annotated[int, msgspec.Meta(ge=0, le=1000)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=100_000)]


class CoreSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Settings of the core runtime (see docs/configuration.md)."""

    database_url: str | None = None
    lap_data_dir: str | None = None
    lap_harness_dir: str | None = None
    lap_sandbox_backend: str = "local"
    litellm_api_base: HttpUrl | None = None
    litellm_api_key: str | None = None
    lap_default_model: str = "gpt-4o-mini"
    lap_turn_timeout: Annotated[float, msgspec.Meta(gt=0)] = 1800.0
    lap_sandbox_start_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # A job whose worker stopped heartbeating is taken over after this many seconds.
    lap_job_lease: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    lap_worker_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 8
    # On shutdown, running turns get this long to finish before they are handed to another worker.
    lap_shutdown_grace: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # A session's sandbox is suspended after this long without activity (0: never).
    session_idle_timeout: Annotated[float, msgspec.Meta(ge=0)] = 1800.0
    lap_reconcile_interval: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # For sandboxes on other machines (Kubernetes): the LLM proxy also listens on this TCP address,
    # and sandboxes reach it at LAP_VAULT_URL (a Service in front of the workers, say).
    lap_vault_listen: HostPort | None = None
    lap_vault_url: HttpUrl | None = None
    # This process's own address of the proxy (a pod's IP and LAP_VAULT_LISTEN's port): sandboxes
    # whose turns it runs connect there first, so another worker dying never cuts their streams.
    lap_vault_advertise: HostPort | None = None
    # The egress gateway: names pinned to addresses (`name=ip,...`, before DNS), its CA (every worker
    # of a deployment needs the same one: paths to a PEM certificate and key; else made in the data
    # dir), and CA certificates it trusts besides the public ones, for upstream servers.
    lap_egress_hosts: EgressHosts | None = None
    lap_egress_ca_cert: str | None = None
    lap_egress_ca_key: str | None = None
    lap_egress_trust: str | None = None
    # `production` refuses to start without ENCRYPTION_KEY (development keeps a key file).
    lap_env: Literal["development", "production"] = "development"
    # 32 bytes, base64 or hex: the key of the secrets kept in the store (lap_core._crypto).
    encryption_key: str | None = None
    # Cloned into every new session's workspace, unless the session's agent names a repository.
    preinstalled_github_repo: RepositoryUrl | None = None
    # Warm sandboxes, ready before sessions need them (the seeds' names and defaults; the local pool
    # comes with issue 6/6, the Kubernetes backend reads WARM_POOL_SIZE as LAP_K8S_WARM_POOL_SIZE).
    warm_pool_size: Count = 2
    warm_pool_ttl_minutes: Positive = 30
    warm_pool_max_provisioning: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    warm_pool_recent_agent_hours: Positive = 24


def host_port(value: str) -> tuple[str, int]:
    """Split a validated `HOST:PORT` (IPv6 in brackets) into (host, port)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def read_environment(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """Return the variables LAP reads: `.env` in the working directory, overridden by the process env."""
    if env is not None:
        return dict(env)
    path = dotenv or Path.cwd() / ".env"
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    values.update(os.environ)
    return values


def _description(annotation: object) -> str | None:
    """Return the `Meta(description=...)` of a field's type (or of a member of its union), if any."""
    for member in (annotation, *get_args(annotation)):
        for meta in getattr(member, "__metadata__", ()):
            if isinstance(meta, msgspec.Meta) and meta.description:
                return meta.description
    return None


def _problem(error: msgspec.ValidationError, annotation: object) -> str:
    message = str(error)
    description = _description(annotation)
    if description and "matching regex" in message:
        return f"expected {description}"  # the pattern itself helps nobody
    # msgspec appends " - at `$...`" for nested paths; one value has no path worth showing.
    return message.split(" - at `", 1)[0]


def aliases_of(struct_type: type[msgspec.Struct]) -> dict[str, str]:
    """Return a settings struct's second names of its fields: field name -> variable name."""
    aliases: dict[str, str] = getattr(struct_type, "env_aliases", {})
    return aliases


def _given(names: tuple[str, ...], env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name in names if (value := env.get(name)) is not None and value != ""}


def _shown(raw: str) -> str:
    """Return a bad value as a message may show it: a URL's user info (a token, say) masked."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", raw)


def load_settings(
    types: Mapping[str, type[msgspec.Struct]], env: Mapping[str, str]
) -> tuple[dict[str, msgspec.Struct], dict[str, str]]:
    """Validate each settings struct of `types` from `env`.

    Returns the settings by key and the problems by variable name (empty when all is valid);
    callers add problems of their own and raise `ConfigError` once. A struct whose optional fields
    failed is still returned, with defaults in their place. A field is read from its variable or
    its alias (`env_aliases`), whichever is set; both set to different values is a problem.
    """
    settings: dict[str, msgspec.Struct] = {}
    problems: dict[str, str] = {}
    for key, struct_type in types.items():
        values: dict[str, object] = {}
        aliases = aliases_of(struct_type)
        for field in msgspec.structs.fields(struct_type):
            name = field.encode_name
            given = _given((name, aliases[field.name]) if field.name in aliases else (name,), env)
            if len(set(given.values())) > 1:
                problems[name] = f"{' and '.join(given)} name the same setting but are set to different values: set one"
                continue
            if not given:
                if field.required:
                    problems[name] = "required but not set"
                continue
            source, raw = next(iter(given.items()))
            try:
                values[name] = msgspec.convert(raw, field.type, strict=False)
            except msgspec.ValidationError as error:
                problems[source] = f"{_problem(error, field.type)} (got {_shown(raw)!r})"
        # Build the struct even when some fields failed (with their defaults), so that later checks
        # that depend on it can still run and report their own problems in the same error.
        try:
            settings[key] = msgspec.convert(values, struct_type)
        except msgspec.ValidationError:
            pass  # a required field is missing: reported above
    return settings, problems


def read_settings(struct_type: type[S], env: Mapping[str, str] | None = None) -> S:
    """Read a plugin's settings struct as LAP does: from `env` (default: `.env` and the process environment).

    Raises `ConfigError` whose `problems` map each bad variable to what is wrong with it. Useful in
    a plugin's tests, and in a service that reads its own settings the way LAP reads its own.
    """
    settings, problems = load_settings({"settings": struct_type}, read_environment(env))
    if problems:
        raise ConfigError(problems)
    result = settings["settings"]
    assert isinstance(result, struct_type)
    return result


def default_data_dir() -> Path:
    """Return where LAP keeps its files when `LAP_DATA_DIR` is unset.

    `/var/lib/lap` for root (sandboxes then run as an unprivileged user, who must be able to
    reach the directory, which rules out /root), else `$XDG_DATA_HOME/lap`.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/lap")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "lap"
