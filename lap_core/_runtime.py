"""`Lap`: the runtime that loads plugins, validates configuration and owns every component's lifetime."""

from __future__ import annotations

import functools
import os
import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import anyio
import structlog

from lap_core import _tracing
from lap_core._config import CoreSettings, default_data_dir, host_port, load_settings, read_environment
from lap_core._crypto import cipher_from, key_problems
from lap_core._egress import EgressGateway, build_gateway
from lap_core._engine import Agents, EventBus, SandboxProvider, Sessions, TurnRunner, Worker
from lap_core._engine.integrations import IntegrationDelivery
from lap_core._engine.keys import Keys
from lap_core._engine.reconciler import Decisions, Reconciler
from lap_core._engine.sandboxes import egress_scope, llm_scope
from lap_core._engine.secrets import Secrets
from lap_core._engine.teams import Teams
from lap_core._engine.usage import Usage
from lap_core._errors import ConfigError, Conflict, NotFound, PluginError
from lap_core._integration import Integration
from lap_core._loop import quiet_cancelled_wakeups
from lap_core._models import DEFAULT_TEAM_ID, Team
from lap_core._plugins import PluginRegistry
from lap_core._redact import register_environment
from lap_core._sandbox import VAULT_DIR, SandboxContext
from lap_core._sandbox_env import container_environment
from lap_core._vault import LLMProxy, StubKeys, UsageCounters

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    import msgspec

    from lap_core._events import SessionEvent
    from lap_core._harness import Harness
    from lap_core._sandbox import SandboxBackend
    from lap_core._specs import SessionStoreSpec
    from lap_core._store import SessionStore

log = structlog.get_logger("lap")


def _build(spec: Any, settings: msgspec.Struct | None, **context: Any) -> Any:
    return spec.factory(settings, **context) if spec.settings is not None else spec.factory(**context)


async def _note(store: SessionStore, bus: EventBus, session_id: str, event: SessionEvent) -> None:
    """Append an event the host adds outside any turn (`turn_id` None) to a session's log, waking its followers.

    The LLM proxy notes `budget_exceeded` errors this way. Never the running turn's id: a worker
    re-attaching to a turn compares the turn's logged events with its harness's replay.
    """
    await store.append_events(session_id, [event])
    bus.notify(session_id)


async def _relay_changes(store: SessionStore, bus: EventBus, worker: Worker) -> None:
    """Pass changes other processes make on to this one's followers and worker."""
    async for change in store.watch():
        if change.kind == "events" and change.session_id:
            bus.notify(change.session_id)
        elif change.kind == "events":
            bus.notify_all()
        elif change.kind == "aborts" and change.session_id:
            worker.abort_requested(change.session_id)
        else:
            worker.wake()


class Lap:
    """A running LAP: `async with Lap() as lap: ...`.

    Loads the plugins given here and (with `load_entry_points`) every installed plugin of the
    `lap` entry point group, validates the whole configuration at once (raising `ConfigError`
    listing every failing key), then opens the store (migrating it when `migrate` is true, or
    by default for the embedded SQLite file; else checking it is migrated), the sandbox backend, the harnesses and
    the LLM proxy. With `run_turns=False` (admin tools) the gateway settings are not required
    and no proxy runs. `settings` adds settings structs of your own (e.g. a server's), validated
    with everything else; read them back with `settings_of(key)`.

    Attributes available inside the `async with`: `teams`, `keys`, `usage`, `agents`, `sessions`, `secrets`, `store`,
    `backend`, `harnesses`, `settings`, `data_dir`, `plugins`, `decisions` (the reconciler's,
    counted by action and reason: `decisions.counts`), `usage_counters` (what this process's LLM
    proxy metered, per team), `egress` (this process's egress gateway, when it runs turns),
    `note(session_id, event)` (appends an event outside any turn) and `integrations` (each installed
    `Integration` by name, started; in a process that runs turns, every session event is delivered to each).
    """

    # The operation groups (docs/api.md lists their methods), set when the `async with` starts.
    teams: Teams
    keys: Keys
    usage: Usage
    agents: Agents
    sessions: Sessions
    secrets: Secrets

    def __init__(
        self,
        *,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        env: Mapping[str, str] | None = None,
        run_turns: bool = True,
        migrate: bool | None = None,
        settings: Mapping[str, type[msgspec.Struct]] | None = None,
    ) -> None:
        self._env = read_environment(env)
        self.plugins = PluginRegistry(plugins, load_entry_points=load_entry_points, env=self._env)
        self._run_turns = run_turns
        self._extra_settings = dict(settings or {})
        self._migrate = migrate
        self.migrations_applied: list[str] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def _configure(self) -> tuple[CoreSettings, SessionStoreSpec, str, Any, dict[str, msgspec.Struct | None]]:
        backends, stores, harness_specs = (
            self.plugins.sandbox_backends(),
            self.plugins.session_stores(),
            self.plugins.harnesses(),
        )
        core_settings, problems = load_settings({"core": CoreSettings}, self._env)
        core = core_settings.get("core")
        if not isinstance(core, CoreSettings):
            raise ConfigError(problems)
        backend_spec = backends.get(core.lap_sandbox_backend)
        if backend_spec is None:
            problems["LAP_SANDBOX_BACKEND"] = (
                f"unknown backend {core.lap_sandbox_backend!r} (installed: {', '.join(backends) or 'none'})"
            )
        data_dir = Path(core.lap_data_dir) if core.lap_data_dir else default_data_dir()
        url = core.database_url or f"sqlite:///{data_dir / 'lap.db'}"
        scheme = urlsplit(url).scheme.split("+")[0]
        store_spec = next((spec for spec in stores.values() if scheme in spec.schemes), None)
        if store_spec is None:
            problems["DATABASE_URL"] = (
                f"no installed store serves {scheme!r} URLs (installed: {', '.join(stores) or 'none'})"
            )
        if self._run_turns:
            for key in ("litellm_api_base", "litellm_api_key"):
                if getattr(core, key) is None:
                    problems[key.upper()] = "required to run agents (the LiteLLM gateway and its key)"
        problems.update(key_problems(core))
        self.container_env, env_problems = container_environment(self._env)
        problems.update(env_problems)
        component_types = {f"harness:{name}": spec.settings for name, spec in harness_specs.items() if spec.settings}
        component_types |= {
            f"integration:{name}": spec.settings for name, spec in self.plugins.integrations().items() if spec.settings
        }
        component_types |= {f"extra:{key}": struct_type for key, struct_type in self._extra_settings.items()}
        if backend_spec is not None and backend_spec.settings is not None:
            component_types["backend"] = backend_spec.settings
        component_settings, component_problems = load_settings(component_types, self._env)
        problems.update(component_problems)
        if problems:
            raise ConfigError(problems)
        assert store_spec is not None
        assert backend_spec is not None
        self.data_dir = data_dir
        self.harness_root = Path(core.lap_harness_dir) if core.lap_harness_dir else data_dir / "harnesses"
        return core, store_spec, url, backend_spec, {**component_settings}

    async def _start(self) -> None:
        register_environment(self._env)  # its keys and passwords are masked in every log line from now on
        core, store_spec, url, backend_spec, component_settings = self._configure()
        self.settings = core
        self._component_settings = component_settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        stack.enter_context(quiet_cancelled_wakeups())
        if _tracing.setup():  # OTEL_EXPORTER_OTLP_ENDPOINT: spans are exported (flushed as it stops)
            stack.callback(_tracing.flush)
        self.store: SessionStore = await stack.enter_async_context(store_spec.factory(url))
        # The embedded default keeps itself migrated; a shared database is migrated by `lap migrate`.
        if self._migrate or (self._migrate is None and core.database_url is None):
            self.migrations_applied = await self.store.migrate()
        else:
            await self.store.check()
        await self._ensure_default_team()

        keys = StubKeys.from_file(self.data_dir / "secrets" / "vault.key")
        vault_socket = self.data_dir / "run" / "vault" / "llm.sock"
        # This process's own socket of the LLM proxy: the sandboxes of the turns it runs use it.
        own_socket = vault_socket.with_name(f"{os.getpid()}-{secrets.token_hex(3)}.sock")
        context = SandboxContext(data_dir=self.data_dir, vault_socket=vault_socket, vault_url=core.lap_vault_url)
        self.backend: SandboxBackend = await stack.enter_async_context(
            _build(backend_spec, component_settings.get("backend"), context=context)
        )
        self.harnesses: dict[str, Harness] = {
            name: _build(spec, component_settings.get(f"harness:{name}"))
            for name, spec in self.plugins.harnesses().items()
        }
        self.teams = Teams(self.store)
        self.keys = Keys(self.store)
        self.usage = Usage(self.store)
        self.agents = Agents(self.store, self.harnesses)
        self.secrets = Secrets(self.store, self.agents, cipher_from(core, self.data_dir))
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)  # runs first on exit: stop turns before closing the store
        bus = EventBus()
        self.note = functools.partial(_note, self.store, bus)
        self.usage_counters = UsageCounters()
        ca_bundle = None
        self.egress: EgressGateway | None = None
        if self._run_turns:
            self.egress, ca_bundle = build_gateway(
                self.data_dir,
                core,
                scope_of=functools.partial(egress_scope, self.store, self.secrets, keys),
                note=self.note,
            )
            assert core.litellm_api_base is not None
            assert core.litellm_api_key is not None
            proxy = LLMProxy(
                socket_path=vault_socket,
                own_socket=own_socket,
                upstream=core.litellm_api_base,
                api_key=core.litellm_api_key,
                keys=keys,
                scope_of=functools.partial(llm_scope, self.store),
                listen=host_port(core.lap_vault_listen) if core.lap_vault_listen else None,
                egress=self.egress,
                usage=self.store,
                note=self.note,
                counters=self.usage_counters,
            )
            await tasks.start(proxy.serve)
        egress = [f"{VAULT_DIR}/{own_socket.name}"]
        if core.lap_vault_advertise:
            egress.append(core.lap_vault_advertise)
        provider = SandboxProvider(
            self.backend,
            self.store,
            keys,
            self.harness_root,
            start_timeout=core.lap_sandbox_start_timeout,
            egress_targets=egress,
            ca_bundle=ca_bundle,
            default_repo=core.preinstalled_github_repo,
            secrets=self.secrets,
            container_env=self.container_env,
        )
        runner = TurnRunner(self.store, provider, self.harnesses, bus, turn_timeout=core.lap_turn_timeout)
        self.decisions = Decisions()
        worker = Worker(
            self.store,
            runner,
            lease_seconds=core.lap_job_lease,
            concurrency=core.lap_worker_concurrency,
            decisions=self.decisions,
        )
        if self._run_turns:
            await tasks.start(worker.run)
            reconciler = Reconciler(
                self.store,
                self.backend,
                self.decisions,
                interval=core.lap_reconcile_interval,
                idle_timeout=core.session_idle_timeout,
                stuck_after=2 * core.lap_sandbox_start_timeout,
                on_queued=worker.wake,
            )
            tasks.start_soon(reconciler.run)
            # Runs before the task group is cancelled (the exit stack unwinds in reverse).
            stack.push_async_callback(self._drain, worker, core.lap_shutdown_grace)
        tasks.start_soon(_relay_changes, self.store, bus, worker)
        self.sessions = Sessions(self.store, self.agents, self.backend, runner, bus, worker)
        await self._start_integrations(component_settings, worker.name, core.lap_job_lease)
        log.debug("lap.started", data_dir=str(self.data_dir), store=store_spec.name, backend=backend_spec.name)

    async def _start_integrations(
        self, component_settings: dict[str, msgspec.Struct | None], holder: str, lease_seconds: float
    ) -> None:
        """Build, start (and close on exit) every integration; in a worker, deliver the event log to each."""
        self.integrations: dict[str, Integration] = {}
        for name, spec in self.plugins.integrations().items():
            integration = _build(spec, component_settings.get(f"integration:{name}"))
            if not isinstance(integration, Integration):
                built = type(integration).__name__
                raise PluginError(f"integration {name!r}: its factory returned {built}, not an Integration")
            self.integrations[name] = await self._stack.enter_async_context(integration)
        for integration in self.integrations.values():
            await integration.start(self)
        if not self._run_turns or not self.integrations:
            return
        # Entered after the integrations, so it exits first: delivery stops before they close.
        deliveries = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(deliveries.cancel_scope.cancel)
        for name, integration in self.integrations.items():
            delivery = IntegrationDelivery(name, integration, self.store, holder=holder, lease_seconds=lease_seconds)
            await deliveries.start(delivery.run)

    @staticmethod
    async def _drain(worker: Worker, grace: float) -> None:
        # Shielded and bounded: exiting on a cancellation (Ctrl-C) still hands running turns back.
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace + 15):
            await worker.drain(grace)

    async def health(self) -> None:
        """Raise a `LapError` (`StoreError`, `SandboxError`...) unless the store is reachable and
        migrated and the sandbox backend answers (a readiness probe)."""
        await self.store.check()
        await self.backend.list({"lap.health": "probe"})

    def settings_of(self, key: str) -> Any:
        """Return the validated settings struct passed as `settings={key: Struct}` (e.g. a server's)."""
        return self._component_settings[f"extra:{key}"]

    async def _ensure_default_team(self) -> None:
        try:
            await self.store.get_team(DEFAULT_TEAM_ID)
        except NotFound:
            try:
                await self.store.create_team(Team(id=DEFAULT_TEAM_ID, name="default"))
            except Conflict:
                pass  # another process created it first
