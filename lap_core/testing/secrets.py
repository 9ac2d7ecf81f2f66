"""Conformance tests for the secret methods of a `SessionStore` (part of `StoreConformance`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from lap_core._errors import Conflict, NotFound
from lap_core._models import Secret, Team, new_id
from lap_core.testing._base import _EPOCH, _agent, _team, _utc_aware

if TYPE_CHECKING:
    from lap_core._models import Agent
    from lap_core._store import SessionStore

# Any bytes at all: NUL, high bytes, what no text column would keep.
CIPHERTEXT = bytes(range(256)) + b"\x00tail"


def _secret(team: Team, name: str = "GITHUB_TOKEN", agent: Agent | None = None, **fields: Any) -> Secret:
    values: dict[str, Any] = {"id": new_id("sec"), "hosts": ("github.com", "*.githubusercontent.com"), **fields}
    return Secret(team_id=team.id, agent_id=agent.id if agent else None, name=name, **values)


def _ids(secrets: list[Secret]) -> list[str]:
    return [secret.id for secret in secrets]


class SecretTests:
    """The secret methods of `SessionStore` (mixed into `StoreConformance`)."""

    async def test_secret_round_trip(self, store: SessionStore) -> None:
        team = await store.create_team(_team())
        secret = _secret(team, created_at=_EPOCH, updated_at=_EPOCH)
        assert await store.create_secret(secret, CIPHERTEXT) == secret
        got = await store.get_secret(secret.id)
        assert got == secret
        assert _utc_aware(got.created_at, got.updated_at)
        assert await store.get_secret(secret.id, team_id=team.id) == secret
        assert await store.list_secrets(team_id=team.id) == [secret]
        assert await store.secret_ciphertexts([secret.id, "sec_missing"]) == {secret.id: CIPHERTEXT}
        assert await store.secret_ciphertexts([]) == {}
        await store.delete_secret(secret.id, team_id=team.id)
        with pytest.raises(NotFound):
            await store.get_secret(secret.id)
        assert await store.secret_ciphertexts([secret.id]) == {}
        assert await store.list_secrets(team_id=team.id) == []

    async def test_an_agent_gets_its_own_and_its_teams_secrets(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        coder = await store.create_agent(_agent(team.id, "coder"))
        reviewer = await store.create_agent(_agent(team.id, "reviewer"))
        team_wide = await store.create_secret(_secret(team, "TOKEN"), b"t")
        own = await store.create_secret(_secret(team, "TOKEN", coder), b"o")  # the same name, the agent's own
        npm = await store.create_secret(_secret(team, "NPM_TOKEN", coder), b"n")
        await store.create_secret(_secret(team, "DEPLOY", reviewer), b"r")
        await store.create_secret(_secret(other, "TOKEN"), b"x")  # another team's: a name of its own
        assert _ids(await store.list_secrets(team_id=team.id, agent_id=coder.id)) == [npm.id, own.id, team_wide.id]
        assert _ids(await store.list_secrets(agent_id=coder.id)) == [npm.id, own.id, team_wide.id]
        assert _ids(await store.list_secrets(team_id=other.id, agent_id=coder.id)) == []
        assert len(await store.list_secrets(team_id=team.id)) == 4
        assert len(await store.list_secrets()) >= 5

    async def test_secret_refusals(self, store: SessionStore) -> None:
        team, other = await store.create_team(_team()), await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id))
        secret = await store.create_secret(_secret(team), b"1")
        with pytest.raises(Conflict):
            await store.create_secret(_secret(team), b"2")  # the team already has one of that name
        with pytest.raises(Conflict):
            await store.create_secret(_secret(team, name="OTHER", id=secret.id), b"2")
        await store.create_secret(_secret(team, agent=agent), b"3")  # the agent's own may share the name
        with pytest.raises(Conflict):
            await store.create_secret(_secret(team, agent=agent), b"4")
        with pytest.raises(NotFound):
            await store.create_secret(_secret(Team(id="team_missing", name="x")), b"5")
        with pytest.raises(NotFound):
            await store.create_secret(_secret(other, agent=agent), b"6")  # an agent of another team
        with pytest.raises(NotFound):
            await store.get_secret(secret.id, team_id=other.id)  # another team's secret is invisible
        with pytest.raises(NotFound):
            await store.delete_secret(secret.id, team_id=other.id)
        with pytest.raises(NotFound):
            await store.delete_secret("sec_missing")
        assert await store.get_secret(secret.id) == secret

    async def test_an_agents_secrets_go_with_it(self, store: SessionStore) -> None:
        team = await store.create_team(_team())
        agent = await store.create_agent(_agent(team.id))
        own = await store.create_secret(_secret(team, agent=agent), b"own")
        team_wide = await store.create_secret(_secret(team), b"team")
        await store.delete_agent(agent.id, team_id=team.id)
        assert _ids(await store.list_secrets(team_id=team.id)) == [team_wide.id]
        assert await store.secret_ciphertexts([own.id, team_wide.id]) == {team_wide.id: b"team"}
