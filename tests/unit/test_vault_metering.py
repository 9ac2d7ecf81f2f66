"""Metering in the LLM proxy: every model call recorded once, before its usage reaches the harness; budgets.

Requests come as a sandbox's do (through sandboxd's real forwarder) to the real proxy, in front of
the recording gateway of `vault_support` answering in each API's wire format; the usage goes to a
real store (SQLite).
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import pytest

from lap_core import Budget, Error, StoreError, Team, UsageRecord, utcnow
from lap_core._vault import LLMScope, UsageCounters
from lap_core._vault.metering import month_start
from lap_sql import SqlStore
from tests.fakes import wire
from tests.unit.vault_support import MODEL, Answer, Running, recorder, running_proxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import SessionEvent
    from lap_core._vault import StubKeys
    from tests.unit.vault_support import Scopes

pytestmark = pytest.mark.anyio

USAGE = {"input": 1000, "output": 50, "cached": 300}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


class Metered:
    """A metered proxy, its scripted gateway, its store, and the notes it made."""

    def __init__(self, running: Running, answers: list[Answer], seen: list[dict[str, Any]], store: Any) -> None:
        self.running, self.answers, self.seen, self.store = running, answers, seen, store
        self.notes: list[tuple[str, SessionEvent]] = []
        self.counters = UsageCounters()

    async def note(self, session_id: str, event: SessionEvent) -> None:
        self.notes.append((session_id, event))

    async def totals(self, **filters: Any) -> tuple[int, int, int, int, float | None]:
        (totals,) = await self.store.usage_totals(**filters)
        cost = round(totals.cost_usd, 9) if totals.calls > totals.unpriced_calls else None
        return totals.calls, totals.input_tokens, totals.output_tokens, totals.cached_tokens, cost


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with SqlStore(f"sqlite:///{tmp_path / 'lap.db'}") as store:
        await store.migrate()
        await store.create_team(Team(id="team_a", name="alpha"))
        await store.create_team(Team(id="team_b", name="beta"))
        yield store


@pytest.fixture
async def metered(tmp_path: Path, keys: StubKeys, scopes: Scopes, store: SqlStore) -> AsyncIterator[Metered]:
    scopes.scopes["ses_1"] = LLMScope(generation=1, models=(MODEL,), team_id="team_a", agent_id="agt_1")
    scopes.scopes["ses_3"] = LLMScope(generation=1, models=(MODEL,), team_id="team_b", agent_id="agt_3")
    answers: list[Answer] = []
    with recorder(answers=answers) as (address, seen):
        setup = Metered(None, answers, seen, store)  # type: ignore[arg-type]
        async with running_proxy(
            tmp_path, f"http://{address}", keys, scopes, usage=store, note=setup.note, counters=setup.counters
        ) as running:
            setup.running = running
            yield setup


def _streamed(api: str, usage: dict[str, int] = USAGE) -> list[bytes | threading.Event]:
    events = wire.stream(api, MODEL, wire.Reply(text=["Hel", "lo"]), usage)
    return [event for event in events if event is not None]


def _unstreamed(api: str, usage: dict[str, int] = USAGE, cost: str | None = None) -> Answer:
    headers = {"content-type": "application/json", **({"x-litellm-response-cost": cost} if cost else {})}
    body = json.dumps(wire.complete(api, MODEL, wire.Reply(text=["done"]), usage)).encode()
    return Answer([body[:20], body[20:]], headers=headers)


def _record(call_id: str, **fields: Any) -> UsageRecord:
    return UsageRecord(id=call_id, team_id="team_a", agent_id="a", session_id="s", model="m", **fields)


async def _post(url: str, stub: dict[str, str], api: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post(PATHS[api], json={"model": MODEL, **body}, headers=stub)


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_every_api_streamed_or_not_is_recorded_once_with_its_session_agent_and_team(
    metered: Metered, api: str
) -> None:
    metered.answers.extend([Answer(_streamed(api)), _unstreamed(api, cost="0.0125")])
    options = {"stream_options": {"include_usage": True}} if api == "chat" else {}
    with metered.running.sandbox() as url:
        streamed = await _post(url, metered.running.stub(), api, stream=True, **options)
        unstreamed = await _post(url, metered.running.stub(), api)
    assert streamed.status_code == unstreamed.status_code == 200
    assert streamed.text.count('"usage"') == (2 if api == "messages" else 1)  # the harness got its usage
    assert unstreamed.json()["usage"]
    # Two calls of 1000 input (300 cached) and 50 output tokens; the unstreamed one priced by its header.
    assert await metered.totals(session_id="ses_1") == (2, 2000, 100, 600, 0.0125)
    assert await metered.totals(team_id="team_a", agent_id="agt_1") == (2, 2000, 100, 600, 0.0125)
    assert await metered.totals(team_id="team_b") == (0, 0, 0, 0, None)
    (by_model,) = await metered.store.usage_totals(group_by=["model"])
    assert by_model.model == MODEL
    counters = metered.counters
    assert counters.calls == {("team_a", "recorded"): 2}
    assert counters.tokens == {("team_a", "input"): 2000, ("team_a", "output"): 100, ("team_a", "cached"): 600}
    assert counters.cost_usd == {"team_a": 0.0125}


async def test_lap_asks_for_a_streamed_chat_completions_usage_and_hides_it_from_the_harness(metered: Metered) -> None:
    litellm_usage = {"input": 7, "output": 3, "cached": 0}
    metered.answers.extend([Answer(_streamed("chat", litellm_usage)), Answer(_streamed("chat"))])
    with metered.running.sandbox() as url:
        asked_by_lap = await _post(url, metered.running.stub(), "chat", stream=True, messages=[{"role": "user"}])
        asked = await _post(url, metered.running.stub(), "chat", stream=True, stream_options={"include_usage": True})
        refused = await _post(url, metered.running.stub(), "chat", stream=True, stream_options={"include_usage": False})
        other = await _post(url, metered.running.stub(), "chat", stream=True, stream_options={"obfuscate": True})
    first, second = metered.seen
    assert json.loads(first["body"]) == {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user"}],
        "stream_options": {"include_usage": True},
    }
    assert json.loads(second["body"])["stream_options"] == {"include_usage": True}
    assert '"usage"' not in asked_by_lap.text
    assert asked_by_lap.text.rstrip().endswith("data: [DONE]")
    assert '"usage"' in asked.text
    assert (refused.status_code, other.status_code) == (400, 400)
    assert refused.json()["error"]["code"] == "usage_required"
    assert len(metered.seen) == 2  # the refused requests went nowhere
    assert await metered.totals() == (2, 1007, 53, 300, None)


async def test_a_call_is_recorded_before_the_bytes_with_its_usage_reach_the_harness(metered: Metered) -> None:
    events = _streamed("responses")
    gate = threading.Event()
    metered.answers.append(Answer([*events[:-1], gate, events[-1]]))  # the last event is `response.completed`
    with metered.running.sandbox() as url:
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream(
                "POST", "/v1/responses", json={"model": MODEL, "stream": True}, headers=metered.running.stub()
            ) as response,
        ):
            received = b""
            async for chunk in response.aiter_raw():
                if not received:
                    assert await metered.totals() == (0, 0, 0, 0, None)  # not yet: the usage has not come
                    gate.set()
                received += chunk
                if b"response.completed" in received:
                    assert await metered.totals() == (1, 1000, 50, 300, None)
    assert b"response.completed" in received


async def test_an_answer_the_harness_hangs_up_on_is_still_read_for_its_usage(metered: Metered) -> None:
    events = _streamed("messages")
    gate = threading.Event()
    metered.answers.append(Answer([*events[:2], gate, *events[2:]]))
    with metered.running.sandbox() as url:
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream(
                "POST", "/v1/messages", json={"model": MODEL, "stream": True}, headers=metered.running.stub()
            ) as response,
        ):
            async for _ in response.aiter_raw():
                break  # the harness reads the start of the answer, then goes away
    gate.set()
    with anyio.fail_after(10):
        while metered.counters.calls != {("team_a", "recorded"): 1}:
            await anyio.sleep(0.02)
    assert await metered.totals() == (1, 1000, 50, 300, None)


async def test_answers_without_usage(metered: Metered) -> None:
    cut = Answer(_streamed("chat")[:3])
    cut.cut = True  # the gateway goes away mid-answer
    error = Answer([b'{"error": {"message": "overloaded"}}'], status=529, headers={"content-type": "application/json"})
    silent = Answer([b"data: [DONE]\n\n"])  # asked for usage, got none
    metered.answers.extend([cut, error, silent])
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    with metered.running.sandbox() as url, metered.running.sandbox("ses_3") as other_team:
        with pytest.raises(httpx.RemoteProtocolError):
            await _post(url, metered.running.stub(), "chat", **stream)
        failed = await _post(url, metered.running.stub(), "chat", **stream)
        empty = await _post(other_team, metered.running.stub("ses_3"), "chat", **stream)
    assert (failed.status_code, empty.status_code) == (529, 200)
    # The cut and the failed call cost nothing known; the one without usage is a call of unknown size.
    assert await metered.totals(team_id="team_a") == (0, 0, 0, 0, None)
    assert await metered.totals(team_id="team_b") == (1, 0, 0, 0, None)
    assert metered.counters.calls == {("team_a", "cut"): 1, ("team_a", "error"): 1, ("team_b", "no_usage"): 1}


async def test_a_record_written_again_after_a_lost_answer_counts_once(metered: Metered) -> None:
    real = metered.store.record_usage
    attempts: list[UsageRecord] = []

    async def record_then_fail(record: UsageRecord) -> bool:
        attempts.append(record)
        stored = await real(record)
        if len(attempts) == 1:
            raise StoreError("the connection dropped before the commit was acknowledged")
        return stored

    metered.store.record_usage = record_then_fail
    metered.answers.append(_unstreamed("messages"))
    with metered.running.sandbox() as url:
        answer = await _post(url, metered.running.stub(), "messages")
    assert answer.status_code == 200
    assert [record.id for record in attempts] == [attempts[0].id] * 2
    assert await metered.totals() == (1, 1000, 50, 300, None)
    assert metered.counters.calls == {("team_a", "recorded"): 1}


async def test_a_team_over_its_budget_is_refused_at_the_proxy_until_it_is_raised(metered: Metered) -> None:
    store = metered.store
    last_month = month_start(utcnow()) - timedelta(seconds=1)
    for at, tokens in ((last_month, 10_000), (utcnow(), 900)):  # last month's usage does not count
        await store.record_usage(_record(f"use_{tokens}", at=at, input_tokens=tokens))
    await store.update_team(
        msgspec.structs.replace(await store.get_team("team_a"), budget=Budget(tokens_per_month=1000))
    )
    metered.answers.extend([_unstreamed("chat", {"input": 60, "output": 40, "cached": 0}), _unstreamed("chat")])
    with metered.running.sandbox() as url, metered.running.sandbox("ses_3") as other_team:
        first = await _post(url, metered.running.stub(), "chat")  # 900 used: allowed, and ends at 1000
        over = await _post(url, metered.running.stub(), "chat")
        again = await _post(url, metered.running.stub(), "chat")
        unaffected = await _post(other_team, metered.running.stub("ses_3"), "chat")
        await store.update_team(
            msgspec.structs.replace(
                await store.get_team("team_a"), budget=Budget(tokens_per_month=2000, usd_per_month=0.5)
            )
        )
        raised = await _post(url, metered.running.stub(), "chat")
        await store.record_usage(_record("use_paid", at=utcnow(), cost_usd=0.5))
        spent = await _post(url, metered.running.stub(), "chat")
    assert first.status_code == 200
    assert (over.status_code, again.status_code) == (402, 402)
    error = over.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "billing_error")
    assert "used 1,000 of its 1,000 tokens this month" in error["message"]
    assert (unaffected.status_code, raised.status_code, spent.status_code) == (200, 200, 402)
    assert "spent $0.5000 of its $0.50 this month" in spent.json()["error"]["message"]
    assert len(metered.seen) == 3  # refused calls never reached the gateway
    # One note in the session's log for the refusals of a minute, not one per refusal.
    assert metered.notes == [("ses_1", Error(code="budget_exceeded", message=error["message"]))]
    assert metered.counters.calls[("team_a", "budget_exceeded")] == 3


async def test_lap_asks_for_usage_in_large_bodies_and_over_a_null_stream_options(metered: Metered) -> None:
    metered.answers.extend([Answer(_streamed("chat")), Answer(_streamed("chat"))])
    large = [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]  # spooled to a file on its way
    with metered.running.sandbox() as url:
        from_file = await _post(url, metered.running.stub(), "chat", stream=True, messages=large)
        null = await _post(url, metered.running.stub(), "chat", stream=True, stream_options=None)
    assert (from_file.status_code, null.status_code) == (200, 200)
    assert '"usage"' not in from_file.text + null.text
    first, second = (json.loads(seen["body"]) for seen in metered.seen)
    assert first == {"model": MODEL, "stream": True, "messages": large, "stream_options": {"include_usage": True}}
    assert second["stream_options"] == {"include_usage": True}  # the member added last is the one read
    assert await metered.totals() == (2, 2000, 100, 600, None)
