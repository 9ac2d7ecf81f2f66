"""Usage and budgets end to end: the real harness CLIs in bwrap sandboxes, through LAP's LLM proxy and a
real LiteLLM proxy, to the fake LLM, which reports a different usage for every request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest

from lap_core import DEFAULT_TEAM_ID, Budget, Error, Team, TurnEnd, new_id
from tests.e2e.usage_support import per_team, reported, sums_of, tag
from tests.fakes.litellm import PRICES

if TYPE_CHECKING:
    from lap_core import EventRecord, Lap
    from tests.fakes.llm_server import FakeLLM

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.bwrap]

HARNESSES = [("opencode", "fake-model"), ("codex", "fake-model"), ("claude-code", "claude-fake")]


async def _turn(lap: Lap, session_id: str, text: str, team_id: str) -> list[EventRecord]:
    with anyio.fail_after(180):
        return [record async for record in lap.sessions.stream(session_id, text, team_id=team_id)]


async def _sessions(lap: Lap, harness: str, model: str, teams: list[str]) -> dict[str, str]:
    """One session of an agent of `harness` in each team: session id -> team id."""
    sessions = {}
    for team in teams:
        agent = await lap.agents.create(f"{harness}-agent", harness=harness, model=model, team_id=team)
        session = await lap.sessions.create(agent.id, team_id=team)
        sessions[session.id] = team
    return sessions


@pytest.mark.parametrize(("harness", "model"), HARNESSES)
async def test_the_usage_recorded_is_what_the_model_reported_per_session_and_team(
    e2e_lap: Lap, llm: FakeLLM, harness: str, model: str
) -> None:
    llm.script(command="echo usage-tool-ran", text="Counted.", usage="varied")
    beta = await e2e_lap.store.create_team(Team(id=new_id("team"), name="beta"))
    sessions = await _sessions(e2e_lap, harness, model, [DEFAULT_TEAM_ID, beta.id])
    for session_id, team in sessions.items():
        for text in ("run the tool", "and once more"):
            records = await _turn(e2e_lap, session_id, f"{text} {tag(session_id)}", team)
            assert records[-1].event == TurnEnd(status="completed"), records

    expected = reported(llm.requests(), sessions)
    assert set(expected) == set(sessions)
    for session_id in sessions:
        (recorded,) = await e2e_lap.store.usage_totals(session_id=session_id)
        assert sums_of(recorded) == expected[session_id], session_id
        assert recorded.calls >= 4  # a tool call and an answer a turn, at least
    for team, sums in per_team(expected, sessions).items():
        (recorded,) = await e2e_lap.store.usage_totals(team_id=team)
        assert sums_of(recorded) == sums, team
    # LiteLLM prices a call from its price list (tests/fakes/litellm.py) and says the cost in its usage
    # block; not for a streamed Anthropic answer (claude-code's), where it has the output tokens only.
    (everything,) = await e2e_lap.store.usage_totals()
    if harness == "claude-code":
        assert everything.unpriced_calls == everything.calls
    else:
        per_input, per_output = PRICES[model]
        assert everything.unpriced_calls == 0
        price = everything.input_tokens * per_input + everything.output_tokens * per_output
        assert everything.cost_usd == pytest.approx(price, rel=1e-9)


@pytest.mark.parametrize(("harness", "model"), HARNESSES)
async def test_a_team_over_budget_is_refused_at_the_proxy_until_the_budget_is_raised(
    e2e_lap: Lap, llm: FakeLLM, harness: str, model: str
) -> None:
    llm.script(command=None, text="Within budget.", usage={"input": 600, "output": 100, "cached": 0})
    team = await e2e_lap.teams.create("thrifty")
    # (opencode retries an error whose body looks like a 5xx or a 429 to its regular expressions: "500" would.)
    (session_id,) = await _sessions(e2e_lap, harness, model, [team.id])

    # The first turn runs without a budget: a harness may make more than one call in it (opencode's
    # title, at a moment of its own), and the budget is checked before each.
    first = await _turn(e2e_lap, session_id, f"hello {tag(session_id)}", team.id)
    assert first[-1].event == TurnEnd(status="completed"), first
    (used,) = await e2e_lap.store.usage_totals(team_id=team.id)
    assert used.input_tokens + used.output_tokens >= 700
    team = await e2e_lap.teams.update(msgspec.structs.replace(team, budget=Budget(tokens_per_month=300)))
    calls = len(llm.requests())

    refused = await _turn(e2e_lap, session_id, f"again {tag(session_id)}", team.id)
    end = refused[-1].event
    assert isinstance(end, TurnEnd), refused
    assert end.status == "failed", refused
    assert len(llm.requests()) == calls  # nothing reached the model
    history = await e2e_lap.sessions.history(session_id, team_id=team.id)
    notes = [r for r in history if isinstance(r.event, Error) and r.event.code == "budget_exceeded"]
    assert len(notes) == 1, history  # however often the harness tried within the minute
    assert notes[0].turn_id is None  # the host's note, outside the turn's own events
    assert "model budget used up: team 'thrifty' has used" in notes[0].event.message  # type: ignore[union-attr]
    (after,) = await e2e_lap.store.usage_totals(team_id=team.id)
    assert after == used
    print(f"{harness}: {[r.event for r in refused[1:]]}")

    await e2e_lap.teams.update(msgspec.structs.replace(team, budget=Budget(tokens_per_month=1_000_000)))
    raised = await _turn(e2e_lap, session_id, f"now {tag(session_id)}", team.id)
    assert raised[-1].event == TurnEnd(status="completed"), raised
    assert len(llm.requests()) > calls
