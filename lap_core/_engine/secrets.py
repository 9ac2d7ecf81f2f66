"""Secrets: create, list and delete them, encrypted at rest; their values for the platform alone.

A value enters through `create`, is encrypted at once (`lap_core._crypto`, bound to the secret's
id, team, agent, name and hosts, so a ciphertext moved to another row or given other hosts does
not decrypt) and leaves only through `values_for`, which the egress gateway calls to put it into
requests to the secret's hosts. Sandboxes get stubs (`StubKeys.secret_stub`), answers and logs
never get a value: both places that hold one register it with the log redaction.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec

from lap_core._crypto import DecryptionError
from lap_core._errors import InvalidInput
from lap_core._models import DEFAULT_TEAM_ID, Secret, new_id
from lap_core._redact import register_secret
from lap_core._sandbox_env import name_problem

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lap_core._crypto import Cipher
    from lap_core._engine.agents import Agents
    from lap_core._models import Agent
    from lap_core._store import SessionStore

MAX_VALUE = 64 * 1024
MAX_HOSTS = 32
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


class SecretValue(msgspec.Struct, frozen=True):
    """A secret and its decrypted value (the platform's only: never logged, stored or shown)."""

    secret: Secret
    value: str

    def __repr__(self) -> str:
        return f"SecretValue(secret={self.secret!r}, value=***)"


def secret_context(secret: Secret) -> bytes:
    """Return what a secret's ciphertext is bound to: its row and everything that says where it may go."""
    return msgspec.json.encode(
        ["lap.secret", secret.id, secret.team_id, secret.agent_id, secret.name, list(secret.hosts)]
    )


def effective(secrets: Iterable[Secret]) -> list[Secret]:
    """Return one secret per name, an agent's own before a team-wide one of the same name."""
    chosen: dict[str, Secret] = {}
    for secret in secrets:
        current = chosen.get(secret.name)
        if current is None or (current.agent_id is None and secret.agent_id is not None):
            chosen[secret.name] = secret
    return sorted(chosen.values(), key=lambda secret: secret.name)


def _hosts(hosts: Sequence[str], problems: dict[str, str]) -> tuple[str, ...]:
    normal = tuple(dict.fromkeys(host.strip().lower().rstrip(".") for host in hosts))
    bad = [host for host in normal if len(host) > 253 or not _HOST.fullmatch(host)]
    if not 1 <= len(normal) <= MAX_HOSTS:
        problems["hosts"] = f"1 to {MAX_HOSTS} host names the secret may be sent to"
    elif bad:
        problems["hosts"] = f"not a host name or '*.suffix' pattern: {', '.join(map(repr, bad))}"
    return normal


class Secrets:
    """The secret operations of a running `Lap` (`lap.secrets`)."""

    def __init__(self, store: SessionStore, agents: Agents, cipher: Cipher) -> None:
        self._store = store
        self._agents = agents
        self._cipher = cipher

    async def create(
        self,
        name: str,
        value: str,
        *,
        hosts: Sequence[str],
        team_id: str = DEFAULT_TEAM_ID,
        agent_id: str | None = None,
    ) -> Secret:
        """Store a secret, encrypted; return it (without its value, which is never shown again).

        `name` is the environment variable holding its stub in sandboxes (of `agent_id`'s, an id or
        name, when given; else of every agent of the team); `hosts` are the host names or `*.suffix`
        patterns whose requests get the real value. Raise `InvalidInput` (naming each problem),
        `NotFound` (agent) or `Conflict` (the name is taken).
        """
        register_secret(value)
        problems: dict[str, str] = {}
        if problem := name_problem(name):
            problems["name"] = problem
        if not value:
            problems["value"] = "must not be empty"
        elif len(value.encode()) > MAX_VALUE or "\x00" in value:
            problems["value"] = f"at most {MAX_VALUE // 1024} KiB of text, without NUL"
        normal_hosts = _hosts(hosts, problems)
        if problems:
            raise InvalidInput(
                "invalid secret: " + "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())), details=problems
            )
        agent = await self._agents.get(agent_id, team_id=team_id) if agent_id is not None else None
        secret = Secret(
            id=new_id("sec"),
            team_id=team_id,
            agent_id=agent.id if agent else None,
            name=name,
            hosts=normal_hosts,
        )
        ciphertext = self._cipher.encrypt(value.encode(), context=secret_context(secret))
        return await self._store.create_secret(secret, ciphertext)

    async def delete(self, secret_id: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> None:
        """Delete a secret at once (sandboxes keep its stub, which nothing swaps any more); raise `NotFound`."""
        await self._store.delete_secret(secret_id, team_id=team_id)

    async def for_agent(self, agent: Agent) -> list[Secret]:
        """Return the secrets an agent's sandboxes get, one per name (its own before its team's)."""
        return effective(await self._store.list_secrets(team_id=agent.team_id, agent_id=agent.id))

    async def values_for(self, agent: Agent) -> list[SecretValue]:
        """Return the agent's secrets with their values, decrypted (for the egress gateway alone).

        Raise `DecryptionError` if a ciphertext does not decrypt (another `ENCRYPTION_KEY`).
        """
        secrets = await self.for_agent(agent)
        ciphertexts = await self._store.secret_ciphertexts([secret.id for secret in secrets])
        values: list[SecretValue] = []
        for secret in secrets:
            if secret.id not in ciphertexts:
                continue  # deleted since it was listed
            try:
                value = self._cipher.decrypt(ciphertexts[secret.id], context=secret_context(secret)).decode()
            except DecryptionError as error:
                raise DecryptionError(f"secret {secret.name} ({secret.id}): {error.message}") from None
            register_secret(value)
            values.append(SecretValue(secret, value))
        return values

    async def list(self, *, team_id: str | None = DEFAULT_TEAM_ID, agent_id: str | None = None) -> list[Secret]:
        """Return the team's secrets (every team's with `team_id=None`), or those an agent's sandboxes get."""
        if agent_id is None:
            return await self._store.list_secrets(team_id=team_id)
        return await self.for_agent(await self._agents.get(agent_id, team_id=team_id))
