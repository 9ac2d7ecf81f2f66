"""Teams and API keys: a team's key sees and touches only its own team's agents, sessions and events."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _as(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_team_keys_are_scoped_to_their_team(api: httpx.AsyncClient) -> None:
    team_b = (await api.post("/api/teams", json={"name": "team-b"})).json()
    key_a = (await api.post("/api/keys", json={"name": "ci"})).json()  # the default team's
    key_b = (await api.post("/api/keys", json={"name": "ci", "team_id": team_b["id"]})).json()
    assert key_a["key"].startswith("lapk_")
    assert key_b["team_id"] == team_b["id"]
    listed = (await api.get("/api/keys")).json()
    assert {k["id"] for k in listed} == {key_a["id"], key_b["id"]}
    assert all(k["key"] is None for k in listed)  # shown once, when created

    async with _as(api, key_a["key"]) as a, _as(api, key_b["key"]) as b:
        agent = (await a.post("/api/agents", json={"name": "mine", "harness": "script", "model": "m"})).json()
        session = (await a.post("/api/sessions", json={"agent_id": agent["id"]})).json()
        reply = await a.post(f"/api/sessions/{session['id']}/messages?wait=true", json={"text": "hi"})
        assert reply.json()["status"] == "completed"

        for path in (
            f"/api/agents/{agent['id']}",
            f"/api/sessions/{session['id']}",
            f"/api/sessions/{session['id']}/messages",
            f"/api/sessions/{session['id']}/events",
        ):
            response = await b.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert (await b.post(f"/api/sessions/{session['id']}/messages", json={"text": "x"})).status_code == 404
        assert (await b.post("/api/sessions", json={"agent_id": agent["id"]})).status_code == 404
        assert (await b.delete(f"/api/sessions/{session['id']}")).status_code == 404
        assert (await b.get("/api/agents")).json()["items"] == []
        assert (await b.get("/api/sessions")).json() == []
        assert [t["id"] for t in (await b.get("/api/teams")).json()] == [team_b["id"]]
        assert (await b.post("/api/teams", json={"name": "mine"})).status_code == 403
        assert (await b.delete(f"/api/keys/{key_a['id']}")).status_code == 404

        # the master key sees every team
        assert {a["name"] for a in (await api.get("/api/agents")).json()["items"]} == {"mine"}
        assert (await api.get(f"/api/sessions/{session['id']}")).status_code == 200

        # a revoked key stops working at once
        assert (await api.delete(f"/api/keys/{key_b['id']}")).status_code == 204
        assert (await b.get("/api/agents")).status_code == 401


async def test_forged_and_malformed_keys_are_refused(api: httpx.AsyncClient) -> None:
    key = (await api.post("/api/keys", json={"name": "real"})).json()["key"]
    _, prefix, secret = key.split("_", 2)
    for forged in (f"lapk_{prefix}_{secret[:-2]}xx", f"lapk_{prefix}_", "lapk__x", "lapk", f"lapk_nope_{secret}"):
        async with _as(api, forged) as client:
            response = await client.get("/api/agents")
            assert response.status_code == 401, forged


async def test_a_teams_default_egress_policy_is_set_by_the_master_key_only(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/teams", json={"name": "egress-team", "egress": {"allow": ["github.com"]}})
    assert created.status_code == 201, created.text
    team = created.json()
    assert team["egress"] == {"allow": ["github.com"], "deny": [], "presets": []}
    changed = await api.patch(f"/api/teams/{team['id']}", json={"egress": {"presets": ["developer"]}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["egress"]["presets"] == ["developer"]
    assert changed.json()["name"] == "egress-team"  # only the fields given change
    bad = await api.patch(f"/api/teams/{team['id']}", json={"egress": {"allow": ["*"], "presets": ["nope"]}})
    assert bad.status_code == 422, bad.text
    assert set(bad.json()["error"]["details"]) == {"egress"}
    cleared = await api.patch(f"/api/teams/{team['id']}", json={"egress": None})
    assert cleared.json()["egress"] is None
    assert (await api.patch("/api/teams/team_missing", json={"egress": None})).status_code == 404
    key = (await api.post("/api/keys", json={"name": "k", "team_id": team["id"]})).json()["key"]
    async with _as(api, key) as member:
        refused = await member.patch(f"/api/teams/{team['id']}", json={"egress": {"allow": ["*"]}})
        assert refused.status_code == 403
    assert (await api.get("/api/teams")).json()[-1]["egress"] is None
