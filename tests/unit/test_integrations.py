"""The Integration contract in one process: built with its settings, started, fed every event, closed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from lap_core import ConfigError, Delivery, Integration, IntegrationSpec, Lap, PluginError, TextDelta, hookimpl
from lap_core._engine import integrations as delivery_engine
from lap_core.testing import IntegrationConformance
from tests.fakes import recording_integration
from tests.fakes.plugin import FakesPlugin
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


class RecSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    rec_url: str


class Recorder(Integration):
    """Keeps what LAP does to it; `fail(delivery)` says whether a delivery raises."""

    retry_delay = 0.01
    retry_delay_max = 0.02

    def __init__(self, fail: Callable[[Delivery], bool] = lambda _: False) -> None:
        self.fail = fail
        self.deliveries: list[Delivery] = []
        self.started_with: Lap | None = None
        self.closed = False
        self.settings: RecSettings | None = None

    async def start(self, lap: Lap) -> None:
        self.started_with = lap

    async def aclose(self) -> None:
        self.closed = True

    async def on_event(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.fail(delivery):
            raise RuntimeError("the outside system is down")

    def delivered(self, session_id: str) -> list[int]:
        return [d.record.seq for d in self.deliveries if d.record.session_id == session_id]


class RecorderPlugin:
    def __init__(self, integration: Recorder, *, settings: type[msgspec.Struct] | None = None) -> None:
        self.integration = integration
        self.settings = settings

    def _build(self, *settings: Any) -> Any:
        if settings:
            self.integration.settings = settings[0]
        return self.integration

    @hookimpl
    def lap_integrations(self) -> Iterator[IntegrationSpec]:
        yield IntegrationSpec(name="rec", factory=self._build, settings=self.settings)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    base = {"LAP_SANDBOX_BACKEND": "process", "LITELLM_API_BASE": "http://127.0.0.1:9", "LITELLM_API_KEY": "k"}
    return lap_env(data_dir, **{**base, **extra})


@pytest.fixture
async def recorder(data_dir: Path) -> AsyncIterator[tuple[Lap, Recorder]]:
    integration = Recorder()
    async with Lap(plugins=[FakesPlugin(), RecorderPlugin(integration)], env=_env(data_dir)) as lap:
        yield lap, integration


async def _until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not check():
            await anyio.sleep(0.02)


async def test_every_event_of_a_turn_is_delivered_in_order_with_stable_keys(
    recorder: tuple[Lap, Recorder],
) -> None:
    lap, integration = recorder
    assert integration.started_with is lap
    assert lap.integrations == {"rec": integration}
    agent = await lap.agents.create("a", harness="script", model="m")
    session = await lap.sessions.create(agent.name)
    with anyio.fail_after(30):
        records = [record async for record in lap.sessions.stream(session.id, "run: echo hi")]
    await _until(lambda: len(integration.delivered(session.id)) == len(records))
    assert [d.record for d in integration.deliveries] == records
    assert [d.key for d in integration.deliveries] == [f"rec:{session.id}:{r.seq}" for r in records]
    assert {d.attempt for d in integration.deliveries} == {1}
    # The cursor is committed after the last delivery: nothing is left for this integration.
    with anyio.fail_after(20):
        while await lap.store.delivery_backlog("rec"):
            await anyio.sleep(0.02)


async def test_a_failed_event_is_retried_before_the_next_one_of_its_session(data_dir: Path) -> None:
    tries: dict[str, int] = {}
    failing: set[str] = set()  # the sessions whose second event fails twice

    def fail(delivery: Delivery) -> bool:
        tries[delivery.key] = tries.get(delivery.key, 0) + 1
        return delivery.record.session_id in failing and delivery.record.seq == 2 and tries[delivery.key] < 3

    integration = Recorder(fail)
    async with Lap(plugins=[FakesPlugin(), RecorderPlugin(integration)], env=_env(data_dir)) as lap:
        agent = await lap.agents.create("a", harness="script", model="m")
        stuck, other = await lap.sessions.create(agent.name), await lap.sessions.create(agent.name)
        failing.add(stuck.id)
        for session in (stuck, other):
            await lap.note(session.id, _text("one"))
            await lap.note(session.id, _text("two"))
            await lap.note(session.id, _text("three"))
        await _until(lambda: integration.delivered(stuck.id)[-1:] == [3])
        assert integration.delivered(stuck.id) == [1, 2, 2, 2, 3]
        assert [d.attempt for d in integration.deliveries if d.record.session_id == stuck.id] == [1, 1, 2, 3, 1]
        assert integration.delivered(other.id) == [1, 2, 3]


async def test_a_slow_session_holds_up_only_its_own_events(data_dir: Path) -> None:
    release = anyio.Event()

    class Slow(Recorder):
        async def on_event(self, delivery: Delivery) -> None:
            await super().on_event(delivery)
            if delivery.record.session_id in slow:
                await release.wait()

    slow: set[str] = set()
    integration = Slow()
    async with Lap(plugins=[FakesPlugin(), RecorderPlugin(integration)], env=_env(data_dir)) as lap:
        agent = await lap.agents.create("a", harness="script", model="m")
        stuck, other = await lap.sessions.create(agent.name), await lap.sessions.create(agent.name)
        slow.add(stuck.id)
        await lap.note(stuck.id, _text("one"))
        await lap.note(stuck.id, _text("two"))
        await _until(lambda: integration.delivered(stuck.id) == [1])
        await lap.note(other.id, _text("one"))
        await _until(lambda: integration.delivered(other.id) == [1])
        assert integration.delivered(stuck.id) == [1]
        release.set()
        await _until(lambda: integration.delivered(stuck.id) == [1, 2])


async def test_an_event_failing_every_try_is_skipped_after_max_attempts(data_dir: Path) -> None:
    class Fragile(Recorder):
        max_attempts = 3

    integration = Fragile(lambda delivery: delivery.record.seq == 1)
    async with Lap(plugins=[FakesPlugin(), RecorderPlugin(integration)], env=_env(data_dir)) as lap:
        agent = await lap.agents.create("a", harness="script", model="m")
        session = await lap.sessions.create(agent.name)
        await lap.note(session.id, _text("poison"))
        await lap.note(session.id, _text("fine"))
        await _until(lambda: 2 in integration.delivered(session.id))
        assert integration.delivered(session.id) == [1, 1, 1, 2]


async def test_integration_settings_are_validated_with_everything_else(data_dir: Path) -> None:
    plugin = RecorderPlugin(Recorder(), settings=RecSettings)
    with pytest.raises(ConfigError) as caught:
        async with Lap(plugins=[FakesPlugin(), plugin], env=_env(data_dir, LAP_SANDBOX_BACKEND="nowhere")):
            pass
    assert {"REC_URL", "LAP_SANDBOX_BACKEND"} <= set(caught.value.problems)
    async with Lap(plugins=[FakesPlugin(), plugin], env=_env(data_dir, REC_URL="https://example.test")):
        assert plugin.integration.settings == RecSettings(rec_url="https://example.test")


async def test_an_integration_is_closed_on_exit_and_fed_nothing_where_turns_do_not_run(data_dir: Path) -> None:
    integration = Recorder()
    plugins = [FakesPlugin(), RecorderPlugin(integration)]
    async with Lap(plugins=plugins, env=lap_env(data_dir, LAP_SANDBOX_BACKEND="process"), run_turns=False) as lap:
        assert integration.started_with is lap  # a web process serves its routes
        agent = await lap.agents.create("a", harness="script", model="m")
        session = await lap.sessions.create(agent.name)
        await lap.note(session.id, _text("hello"))
        assert await lap.store.delivery_backlog("rec") == {session.id: 0}
    assert integration.closed
    assert integration.deliveries == []


async def test_a_factory_must_return_an_integration(data_dir: Path) -> None:
    class Wrong:
        @hookimpl
        def lap_integrations(self) -> Iterator[IntegrationSpec]:
            yield IntegrationSpec(name="wrong", factory=object)

    with pytest.raises(PluginError, match="'wrong'"):
        async with Lap(plugins=[FakesPlugin(), Wrong()], env=_env(data_dir)):
            pass


def _text(text: str) -> TextDelta:
    return TextDelta(text=text)


class TestRecorderConformance(IntegrationConformance):
    name = "rec"

    @pytest.fixture
    async def integration(self, recorder: tuple[Lap, Recorder]) -> Recorder:
        return recorder[1]


class TestRecorderThroughTheKit(IntegrationConformance):
    """As a plugin author runs it: the kit's `lap`, the integration named."""

    name = "recorder"

    @pytest.fixture
    def lap_plugins(self) -> list[object]:
        return [recording_integration]

    @pytest.fixture
    def lap_env(self, lap_env: dict[str, str], lap_data_dir: Path) -> dict[str, str]:
        return {**lap_env, "RECORDER_FILE": str(lap_data_dir / "deliveries.jsonl")}


@pytest.mark.postgres
async def test_with_a_store_that_watches_new_events_are_found_without_reading_every_session(
    data_dir: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the first look reads every session: the rest must come from the store's notifications.
    monkeypatch.setattr(delivery_engine, "FULL_SCAN_EVERY", 3600.0)
    integration = Recorder()
    env = _env(data_dir, DATABASE_URL=pg_database)
    async with Lap(plugins=[FakesPlugin(), RecorderPlugin(integration)], env=env, migrate=True) as lap:
        assert lap.store.watches_changes
        agent = await lap.agents.create("a", harness="script", model="m")
        session = await lap.sessions.create(agent.name)
        await anyio.sleep(1.5)  # past the first look at every session
        await lap.note(session.id, _text("one"))
        await lap.note(session.id, _text("two"))
        await _until(lambda: integration.delivered(session.id) == [1, 2])
