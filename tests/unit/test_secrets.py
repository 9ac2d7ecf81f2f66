"""`lap.secrets`: what a secret may be, and that its value comes back only under the right key, from its own row."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from lap_core import InvalidInput, Lap, NotFound, Secret
from lap_core._crypto import DecryptionError
from lap_core._engine.secrets import MAX_HOSTS, MAX_VALUE
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio
KEY = secrets.token_hex(32)


@pytest.fixture
async def lap(data_dir: Path) -> AsyncIterator[Lap]:
    async with Lap(env=lap_env(data_dir, ENCRYPTION_KEY=KEY), run_turns=False) as running:
        yield running


async def test_hosts_are_normalised(lap: Lap) -> None:
    secret = await lap.secrets.create("TOKEN", "v", hosts=[" GitHub.com. ", "github.com", "*.Example.org", "10.0.0.7"])
    assert secret.hosts == ("github.com", "*.example.org", "10.0.0.7")
    assert secret.agent_id is None
    assert secret.team_id == "team_default"


@pytest.mark.parametrize(
    ("name", "value", "hosts", "problems"),
    [
        ("PATH", "v", ["a.test"], {"name"}),
        ("9LIVES", "v", ["a.test"], {"name"}),
        ("A" * 129, "v", ["a.test"], {"name"}),
        ("TOKEN", "", ["a.test"], {"value"}),
        ("TOKEN", "x" * (MAX_VALUE + 1), ["a.test"], {"value"}),
        ("TOKEN", "a\x00b", ["a.test"], {"value"}),
        ("TOKEN", "v", [], {"hosts"}),
        ("TOKEN", "v", [f"h{n}.test" for n in range(MAX_HOSTS + 1)], {"hosts"}),
        ("TOKEN", "v", ["*"], {"hosts"}),
        ("TOKEN", "v", ["*.*.test"], {"hosts"}),
        ("TOKEN", "v", ["github.com/path"], {"hosts"}),
        ("TOKEN", "v", ["github.com:443"], {"hosts"}),
        ("TOKEN", "v", ["-bad.test"], {"hosts"}),
        ("LAP_X", "", ["a b"], {"name", "value", "hosts"}),
    ],
)
async def test_invalid_secrets_name_every_problem(
    lap: Lap, name: str, value: str, hosts: list[str], problems: set[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await lap.secrets.create(name, value, hosts=hosts)
    assert set(caught.value.details) == problems
    assert await lap.secrets.list() == []


async def test_an_agent_of_another_team_is_not_found(lap: Lap) -> None:
    await lap.agents.create("coder", harness="opencode", model="m")
    with pytest.raises(NotFound):
        await lap.secrets.create("TOKEN", "v", hosts=["a.test"], team_id="team_other", agent_id="coder")


async def test_values_need_the_key_they_were_encrypted_under(data_dir: Path) -> None:
    async with Lap(env=lap_env(data_dir, ENCRYPTION_KEY=KEY), run_turns=False) as lap:
        agent = await lap.agents.create("coder", harness="opencode", model="m")
        await lap.secrets.create("GH_TOKEN", "the-value", hosts=["github.com"])
        assert [v.value for v in await lap.secrets.values_for(agent)] == ["the-value"]
    async with Lap(env=lap_env(data_dir, ENCRYPTION_KEY=secrets.token_hex(32)), run_turns=False) as lap:
        assert [s.name for s in await lap.secrets.list()] == ["GH_TOKEN"]  # listing needs no key
        with pytest.raises(DecryptionError, match=r"secret GH_TOKEN \(sec_\w+\): cannot decrypt"):
            await lap.secrets.values_for(agent)


async def _copy(lap: Lap, source: Secret, **changes: Any) -> Secret:
    """Store a row with another secret's ciphertext, as someone who can write to the database would."""
    [ciphertext] = (await lap.store.secret_ciphertexts([source.id])).values()
    fields = {"id": f"sec_copy{secrets.token_hex(4)}", "team_id": source.team_id, "name": source.name}
    return await lap.store.create_secret(Secret(**{**fields, "hosts": source.hosts, **changes}), ciphertext)


async def test_a_ciphertext_moved_to_another_row_or_other_hosts_does_not_decrypt(lap: Lap) -> None:
    coder = await lap.agents.create("coder", harness="opencode", model="m")
    original = await lap.secrets.create("GH_TOKEN", "the-value", hosts=["github.com"])
    for changes in (
        {"agent_id": coder.id},  # the same name, hosts and team, another row
        {"agent_id": coder.id, "hosts": ("evil.example",)},  # sent somewhere else
        {"agent_id": coder.id, "name": "OTHER"},
    ):
        copy = await _copy(lap, original, **changes)
        with pytest.raises(DecryptionError):
            await lap.secrets.values_for(coder)
        await lap.store.delete_secret(copy.id)
    [value] = await lap.secrets.values_for(coder)
    assert (value.secret, value.value) == (original, "the-value")
