"""Usage when a worker dies mid-turn: `lap serve --no-worker` and two `lap worker`s on PostgreSQL (tests/cluster.py),
real harness CLIs in bwrap sandboxes, the real LiteLLM proxy and the fake LLM.

The worker running a turn is killed with SIGKILL while a model answer streams through its LLM
proxy. The harness in the sandbox lives on and calls the model again through the other worker's
proxy, which takes the turn over. Every call the model reported is recorded once: the killed
call never was (its usage never reached the dead proxy, nor the harness), none twice.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_sql import SqlStore
from tests.cluster import api_client, cluster_env, running_cluster
from tests.e2e.usage_support import per_team, reported, sums_of, tag

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from tests.cluster import Cluster
    from tests.fakes.litellm import LiteLLMProxy
    from tests.fakes.llm_server import FakeLLM

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

LEASE = 3  # seconds: the dead worker's turn is taken over this soon


async def _session(api: httpx.AsyncClient, harness: str, model: str, team: str) -> str:
    agent = await api.post("/api/agents", json={"name": "metered", "harness": harness, "model": model, "team_id": team})
    assert agent.status_code == 201, agent.text
    session = await api.post("/api/sessions", json={"agent_id": agent.json()["id"]})
    assert session.status_code == 201, session.text
    return str(session.json()["id"])


async def _ended(api: httpx.AsyncClient, session: str, turn_id: str) -> dict[str, Any]:
    """Wait for the turn's `turn_end`; return it."""
    with anyio.fail_after(150):
        while True:
            history = (await api.get(f"/api/sessions/{session}/messages")).json()
            ends = [r["event"] for r in history if r["turn_id"] == turn_id and r["event"]["type"] == "turn_end"]
            if ends:
                return dict(ends[0])
            await anyio.sleep(0.2)


async def _running_worker(cluster: Cluster, database: str, turn_id: str) -> str:
    async with SqlStore(database) as store:
        (job,) = [job for job in await store.list_jobs(limit=100) if job.payload.get("turn_id") == turn_id]
    return cluster.worker_of(job)


def _streaming_answers(llm: FakeLLM, session: str) -> int:
    """How many of the session's requests asked for an answer after a tool ran (the ones that stream text)."""
    return sum(
        1 for r in llm.requests() if tag(session) in json.dumps(r["body"]) and "tool-ran-" in json.dumps(r["body"])
    )


@pytest.mark.parametrize(
    ("harness", "model"), [("opencode", "fake-model"), ("codex", "fake-model"), ("claude-code", "claude-fake")]
)
async def test_a_worker_killed_mid_answer_loses_no_call_and_counts_none_twice(
    data_dir: Path,
    pg_database: str,
    tmp_path: Path,
    harness_root: Path,
    litellm_proxy: LiteLLMProxy,
    llm: FakeLLM,
    harness: str,
    model: str,
) -> None:
    env = cluster_env(data_dir, pg_database, tmp_path / "entry-point", LAP_JOB_LEASE=str(LEASE))
    env |= {
        "LAP_SANDBOX_BACKEND": "local",
        "LITELLM_API_BASE": litellm_proxy.url,
        "LITELLM_API_KEY": litellm_proxy.master_key,
    }
    # The answer after the tool streams in 4 pieces a second apart: long enough to kill its worker mid-way.
    llm.script(command="echo tool-ran-$RANDOM", text="The answer, in pieces.", chunks=4, delay=1.0, usage="varied")
    with running_cluster(data_dir, env, tmp_path / "logs") as cluster:
        async with api_client(cluster) as api:
            beta = (await api.post("/api/teams", json={"name": "beta"})).json()["id"]
            victim = await _session(api, harness, model, "team_default")
            other = await _session(api, harness, model, beta)
            sessions = {victim: "team_default", other: beta}

            sent = await api.post(f"/api/sessions/{victim}/messages", json={"text": f"run it {tag(victim)}"})
            turn_id = sent.json()["turn_id"]
            with anyio.fail_after(120):
                while not _streaming_answers(llm, victim):
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # the answer's first piece is out, its usage 2.5 s away
            killed = await _running_worker(cluster, pg_database, turn_id)
            cluster.kill(killed)
            killed_at = time.monotonic()

            end = await _ended(api, victim, turn_id)
            assert end["status"] == "completed", (end, cluster.log_text())
            resumed_after = time.monotonic() - killed_at
            # The other team's session runs on the survivor meanwhile.
            done = await api.post(
                f"/api/sessions/{other}/messages?wait=true", json={"text": f"go {tag(other)}"}, timeout=150
            )
            assert done.json()["status"] == "completed", done.text

            expected = reported(llm.requests(), sessions)
            cut = [r for r in llm.requests() if tag(victim) in json.dumps(r["body"]) and "usage" not in r]
            assert cut, "no answer was cut by the kill"
            for session in sessions:
                recorded = (await api.get("/api/usage", params={"session_id": session})).json()["totals"]
                assert sums_of(recorded) == expected[session], (session, cluster.log_text())
            for team, sums in per_team(expected, sessions).items():
                recorded = (await api.get("/api/usage", params={"team_id": team})).json()["totals"]
                assert sums_of(recorded) == sums, team
            for session in sessions:
                assert (await api.delete(f"/api/sessions/{session}")).status_code == 204
    print(f"{harness}: {len(cut)} call(s) cut by the kill; the turn ended {resumed_after:.1f} s after it; {expected}")
