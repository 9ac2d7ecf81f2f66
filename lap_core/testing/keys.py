"""Conformance tests for the API-key methods of a `SessionStore`."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import pytest

from lap_core._errors import Conflict, NotFound
from lap_core._models import ApiKey, Team, new_id
from lap_core.testing._base import StoreSuite

if TYPE_CHECKING:
    from lap_core._store import SessionStore


async def _team(store: SessionStore) -> Team:
    return await store.create_team(Team(id=new_id("team"), name=new_id("name")))


def _key(team: Team, prefix: str | None = None) -> ApiKey:
    return ApiKey(id=new_id("key"), team_id=team.id, name="ci", prefix=prefix or new_id("p"), secret_hash="ab" * 32)


class ApiKeyConformance(StoreSuite):
    """Tests the API-key methods of `SessionStore`; subclass it and provide the `store` fixture."""

    async def test_create_find_list_delete(self, store: SessionStore) -> None:
        team = await _team(store)
        first = await store.create_api_key(_key(team))
        second = await store.create_api_key(_key(team))
        found = await store.find_api_key(first.prefix)
        assert found == first
        assert found.created_at.tzinfo is not None
        assert found.created_at.utcoffset() == UTC.utcoffset(None)
        assert [k.id for k in await store.list_api_keys(team_id=team.id)] == [first.id, second.id]
        await store.delete_api_key(first.id, team_id=team.id)
        with pytest.raises(NotFound):
            await store.find_api_key(first.prefix)
        assert [k.id for k in await store.list_api_keys()] == [second.id]

    async def test_refusals(self, store: SessionStore) -> None:
        team, other = await _team(store), await _team(store)
        key = await store.create_api_key(_key(team, prefix="same-prefix"))
        with pytest.raises(Conflict):
            await store.create_api_key(_key(other, prefix="same-prefix"))
        with pytest.raises(NotFound):
            await store.create_api_key(_key(Team(id="team_missing", name="x")))
        with pytest.raises(NotFound):
            await store.find_api_key("no-such-prefix")
        with pytest.raises(NotFound):
            await store.delete_api_key(key.id, team_id=other.id)  # another team's key is invisible
        with pytest.raises(NotFound):
            await store.delete_api_key("key_missing")
        assert await store.list_api_keys(team_id=other.id) == []
        assert [k.id for k in await store.list_api_keys(team_id=team.id)] == [key.id]
