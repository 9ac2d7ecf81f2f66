"""What metering costs a model call: the LLM proxy with and without it, and the answer reader alone.

Run: `.venv/bin/python bench/metering.py [--calls N] [--postgres]`. The real proxy runs in this
process behind sandboxd's real forwarder, in front of the recording gateway of
tests/unit/vault_support.py, which streams a chat completion of 20 events with its usage. Each
call is timed from the request to the end of the answer, alternately

(a) on a proxy without metering;
(b) on a proxy that meters into the store (SQLite, or a throwaway PostgreSQL database): it sums
    the team's month for the budget check (the team has a budget, so the check reads the store)
    and records the call before its usage goes on;

then, (c), `AnswerReader` alone reads a 2 MiB stream of small events, for its throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import data_dir, line, pg_database

from lap_core import Budget, Team
from lap_core._vault import LLMScope, StubKeys, UsageCounters
from lap_core._vault.answer import AnswerReader
from lap_sql import SqlStore
from tests.fakes import wire
from tests.unit.vault_support import MODEL, Answer, Scopes, recorder, running_proxy


def _events() -> list[bytes]:
    reply = wire.Reply(text=[f"piece {i} " for i in range(18)])
    return [event for event in wire.stream("chat", MODEL, reply) if event is not None]


async def _time_calls(url: str, stub: dict[str, str], calls: int) -> list[float]:
    samples = []
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(calls):
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body, headers=stub)
            assert response.status_code == 200, response.text
            assert '"usage"' in response.text
            samples.append(time.perf_counter() - started)
    return samples


async def main(calls: int, postgres: bool) -> None:
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    keys, scopes = StubKeys(b"b" * 32), Scopes()
    scopes.scopes["ses_1"] = LLMScope(generation=1, models=(MODEL,), team_id="team_b", agent_id="agt_b")
    answers: list[Answer] = []
    with data_dir() as root, recorder(answers=answers) as (address, _seen):
        async with AsyncExitStack() as stack:
            url = await stack.enter_async_context(pg_database()) if postgres else f"sqlite:///{root / 'lap.db'}"
            store = await stack.enter_async_context(SqlStore(url))
            await store.migrate()
            await store.create_team(Team(id="team_b", name="bench", budget=Budget(tokens_per_month=10**12)))
            (root / "plain").mkdir()
            (root / "metered").mkdir()
            gateway = f"http://{address}"
            plain = await stack.enter_async_context(running_proxy(root / "plain", gateway, keys, scopes))
            metering = running_proxy(root / "metered", gateway, keys, scopes, usage=store, counters=UsageCounters())
            metered = await stack.enter_async_context(metering)
            answers.extend(Answer(list(_events())) for _ in range(2 * (calls + 10)))
            results: dict[str, list[float]] = {"plain": [], "metered": []}
            with plain.sandbox() as plain_url, metered.sandbox() as metered_url:
                for target in (plain_url, metered_url):
                    await _time_calls(target, plain.stub(), 5)  # warm up
                for _ in range(calls // 10):
                    for name, target in (("plain", plain_url), ("metered", metered_url)):
                        results[name] += await _time_calls(target, plain.stub(), 10)
            (recorded,) = await store.usage_totals(team_id="team_b")
    kind = "PostgreSQL" if postgres else "SQLite"
    print(f"{calls} streamed chat completions (20 events each) per proxy, store {kind}:")
    print(line("(a) proxy without metering", results["plain"]))
    print(line("(b) proxy metering + budget check", results["metered"]))
    plain_p50 = sorted(results["plain"])[len(results["plain"]) // 2]
    metered_p50 = sorted(results["metered"])[len(results["metered"]) // 2]
    added = 1000 * (metered_p50 - plain_p50)
    print(f"{'added by metering (p50)':<40} {added:8.2f} ms; calls recorded: {recorded.calls}")

    event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 40}}]}).encode() + b"\n\n"
    stream = event * (2 * 1024 * 1024 // len(event)) + _events()[-2] + _events()[-1]
    started = time.perf_counter()
    reader = AnswerReader("chat", streamed=True)
    for offset in range(0, len(stream), 1400):  # about what one TCP segment brings
        reader.feed(stream[offset : offset + 1400])
    reader.end()
    elapsed = time.perf_counter() - started
    assert reader.usage is not None
    print(f"{'(c) AnswerReader, 2 MiB of small events':<40} {len(stream) / elapsed / 2**20:8.1f} MiB/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    arguments = parser.parse_args()
    anyio.run(main, arguments.calls, arguments.postgres)
