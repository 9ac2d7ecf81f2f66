"""LAP's core: run AI coding agents in isolated sandboxes, from Python or through the bundled server.

Embedding looks like this::

    async with Lap() as lap:
        agent = await lap.agents.create("demo", harness="opencode", model="gpt-4o-mini")
        session = await lap.sessions.create(agent.id)
        async for record in lap.sessions.stream(session.id, "write hello.txt"):
            print(record.event)

Plugins add sandbox backends, harnesses, stores and integrations through the hooks in
`lap_core.hookspecs`. Everything public is importable from here; modules starting with `_`
are private.
"""

from lap_core._runtime import Lap
from lap_core.errors import (
    ConfigError,
    Conflict,
    HarnessError,
    InvalidInput,
    LapError,
    NotFound,
    NotSupported,
    PluginError,
    SandboxError,
    StoreError,
)
from lap_core.events import (
    EgressDenied,
    Error,
    EventRecord,
    HarnessSession,
    ReasoningDelta,
    SessionEvent,
    Status,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    Usage,
    UserMessage,
    decode_event,
    encode_event,
)
from lap_core.harness import CliHarness, Harness, LineMapper, LLMAccess, NativeState, json_object
from lap_core.hookspecs import hookimpl
from lap_core.integration import Integration
from lap_core.models import (
    DEFAULT_TEAM_ID,
    Agent,
    ApiKey,
    Budget,
    Job,
    Secret,
    Session,
    Team,
    Turn,
    TurnRecord,
    UsageRecord,
    UsageTotals,
)
from lap_core.sandbox import (
    ExecResult,
    FileSpec,
    HydratePayload,
    OutputRecord,
    ProcessInfo,
    SandboxBackend,
    SandboxClient,
    SandboxContext,
    SandboxdError,
    SandboxRef,
    SandboxSpec,
    StartProcess,
)
from lap_core.specs import HarnessSpec, IntegrationSpec, SandboxBackendSpec, SessionStoreSpec
from lap_core.store import SessionStore

__all__ = [
    "DEFAULT_TEAM_ID",
    "Agent",
    "ApiKey",
    "Budget",
    "CliHarness",
    "ConfigError",
    "Conflict",
    "EgressDenied",
    "Error",
    "EventRecord",
    "ExecResult",
    "FileSpec",
    "Harness",
    "HarnessError",
    "HarnessSession",
    "HarnessSpec",
    "HydratePayload",
    "Integration",
    "IntegrationSpec",
    "InvalidInput",
    "Job",
    "LLMAccess",
    "Lap",
    "LapError",
    "LineMapper",
    "NativeState",
    "NotFound",
    "NotSupported",
    "OutputRecord",
    "PluginError",
    "ProcessInfo",
    "ReasoningDelta",
    "SandboxBackend",
    "SandboxBackendSpec",
    "SandboxClient",
    "SandboxContext",
    "SandboxError",
    "SandboxRef",
    "SandboxSpec",
    "SandboxdError",
    "Secret",
    "Session",
    "SessionEvent",
    "SessionStore",
    "SessionStoreSpec",
    "StartProcess",
    "Status",
    "StoreError",
    "Team",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "Turn",
    "TurnEnd",
    "TurnRecord",
    "Usage",
    "UsageRecord",
    "UsageTotals",
    "UserMessage",
    "decode_event",
    "encode_event",
    "hookimpl",
    "json_object",
]
