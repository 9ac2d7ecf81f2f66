"""Secrets through the API: stored as ciphertext, never answered, team-scoped, refused with a reason."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
import structlog

from lap_core import DEFAULT_TEAM_ID, Secret
from lap_core._crypto import KEY_FILE, Cipher, DecryptionError, parse_key
from lap_core._engine.secrets import secret_context

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio
VALUE = "ghp_0123456789abcdefREALtokenNEVERshown"


def _as(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def _row(data_dir: Path, database: dict[str, str], secret_id: str) -> dict[str, Any]:
    """Read a secret's row with plain SQL, as someone holding the database would."""
    query = "SELECT * FROM secrets WHERE id = "
    if "DATABASE_URL" in database:
        connection = await asyncpg.connect(database["DATABASE_URL"])
        try:
            return dict(await connection.fetchrow(query + "$1", secret_id))
        finally:
            await connection.close()
    with sqlite3.connect(data_dir / "lap.db") as connection:
        connection.row_factory = sqlite3.Row
        return dict(connection.execute(query + "?", (secret_id,)).fetchone())


async def test_a_secret_is_ciphertext_in_the_database_and_never_answered(
    api: httpx.AsyncClient, data_dir: Path, database: dict[str, str]
) -> None:
    with structlog.testing.capture_logs() as logs:
        created = await api.post("/api/secrets", json={"name": "GH_TOKEN", "value": VALUE, "hosts": ["GitHub.com."]})
        listed = await api.get("/api/secrets")
    assert created.status_code == 201, created.text
    secret = created.json()
    assert set(secret) == {"id", "team_id", "agent_id", "name", "hosts", "created_at", "updated_at"}
    assert (secret["name"], secret["hosts"], secret["agent_id"]) == ("GH_TOKEN", ["github.com"], None)
    assert listed.json() == [secret]
    for answer in (created, listed):
        assert VALUE not in answer.text
    assert VALUE not in repr(logs)

    row = await _row(data_dir, database, secret["id"])
    assert not any(VALUE in str(value) for value in row.values())
    ciphertext = bytes(row["ciphertext"])
    assert VALUE.encode() not in ciphertext
    # It is the value's ciphertext under the deployment's key (here the development key file) ...
    cipher = Cipher(parse_key((data_dir / KEY_FILE).read_text()))
    record = Secret(id=secret["id"], team_id=DEFAULT_TEAM_ID, name="GH_TOKEN", hosts=("github.com",))
    assert cipher.decrypt(ciphertext, context=secret_context(record)).decode() == VALUE
    # ... bound to its row: the same blob with other hosts (or another id) does not decrypt.
    elsewhere = Secret(id=secret["id"], team_id=DEFAULT_TEAM_ID, name="GH_TOKEN", hosts=("evil.example",))
    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext, context=secret_context(elsewhere))

    assert (await api.delete(f"/api/secrets/{secret['id']}")).status_code == 204
    assert (await api.get("/api/secrets")).json() == []
    assert (await api.delete(f"/api/secrets/{secret['id']}")).status_code == 404


async def test_team_b_can_neither_see_nor_delete_team_as_secrets(api: httpx.AsyncClient) -> None:
    team_b = (await api.post("/api/teams", json={"name": "team-b"})).json()
    key_a = (await api.post("/api/keys", json={"name": "a"})).json()["key"]
    key_b = (await api.post("/api/keys", json={"name": "b", "team_id": team_b["id"]})).json()["key"]
    async with _as(api, key_a) as a, _as(api, key_b) as b:
        agent = (await a.post("/api/agents", json={"name": "coder", "harness": "script", "model": "m"})).json()
        team_wide = (await a.post("/api/secrets", json={"name": "TOKEN", "value": VALUE, "hosts": ["a.test"]})).json()
        body = {"name": "TOKEN", "value": "agent-own-value", "hosts": ["b.test"], "agent_id": "coder"}
        own = await a.post("/api/secrets", json=body)
        assert own.status_code == 201, own.text
        assert own.json()["agent_id"] == agent["id"]
        assert (await a.post("/api/secrets", json=body)).status_code == 409  # the agent has one of that name

        assert (await b.get("/api/secrets")).json() == []
        assert (await b.get(f"/api/secrets?agent_id={agent['id']}")).status_code == 404
        for secret_id in (team_wide["id"], own.json()["id"]):
            refused = await b.delete(f"/api/secrets/{secret_id}")
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "not_found"
        foreign = {"name": "X", "value": "v", "hosts": ["c.test"], "agent_id": agent["id"]}
        assert (await b.post("/api/secrets", json=foreign)).status_code == 404  # another team's agent
        as_team_a = {"name": "X", "value": "v", "hosts": ["c.test"], "team_id": DEFAULT_TEAM_ID}
        assert (await b.post("/api/secrets", json=as_team_a)).status_code == 403
        mine = (await b.post("/api/secrets", json={"name": "TOKEN", "value": "b's", "hosts": ["c.test"]})).json()
        assert mine["team_id"] == team_b["id"]  # the same name in another team is another secret

        # The agent gets its own TOKEN, not the team-wide one; team A still holds both.
        assert [s["id"] for s in (await a.get("/api/secrets?agent_id=coder")).json()] == [own.json()["id"]]
        assert len((await a.get("/api/secrets")).json()) == 2
    every = {s["id"] for s in (await api.get("/api/secrets")).json()}  # the master key sees every team's
    assert every >= {team_wide["id"], own.json()["id"], mine["id"]}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("PATH", "PATH is reserved: the sandbox's own"),
        ("HOME", "HOME is reserved"),
        ("LITELLM_API_KEY", "the LLM gateway's"),
        ("LAP_ANYTHING", "LAP's (LAP_*)"),
        ("ANTHROPIC_API_KEY", "a harness's stub key"),
        ("CODEX_HOME", "a harness's stub key or configuration"),
        ("HTTPS_PROXY", "the egress gateway's proxy and CA settings"),
        ("no_proxy", "the egress gateway's"),
        ("NODE_EXTRA_CA_CERTS", "the egress gateway's"),
        ("npm_config_https_proxy", "the egress gateway's"),
        ("1TOKEN", "not an environment variable name"),
        ("MY-TOKEN", "not an environment variable name"),
        ("MY TOKEN", "not an environment variable name"),
    ],
)
async def test_reserved_names_and_non_variable_names_are_refused(
    api: httpx.AsyncClient, name: str, problem: str
) -> None:
    refused = await api.post("/api/secrets", json={"name": name, "value": VALUE, "hosts": ["github.com"]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_input"
    assert problem in error["details"]["name"]
    assert problem in error["message"]
    assert VALUE not in refused.text
    assert (await api.get("/api/secrets")).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hosts": ["*"]}, "hosts"),
        ({"hosts": ["https://github.com"]}, "hosts"),
        ({"hosts": ["git hub.com"]}, "hosts"),
        ({"hosts": []}, None),
        ({"value": ""}, None),
        ({"value": "a\u0000b"}, None),
        ({"agent_id": "no-such-agent"}, None),
    ],
)
async def test_bad_secrets_are_a_4xx(api: httpx.AsyncClient, body: dict[str, Any], field: str | None) -> None:
    refused = await api.post("/api/secrets", json={"name": "TOKEN", "value": VALUE, "hosts": ["a.test"], **body})
    assert 400 <= refused.status_code < 500, refused.text
    assert VALUE not in refused.text
    if field:
        assert field in refused.json()["error"]["details"]
