"""LAP's core: run AI coding agents in isolated sandboxes, from Python or through the bundled server.

Embedding looks like this::

    async with Lap() as lap:
        agent = await lap.agents.create("demo", harness="opencode", model="gpt-4o-mini")
        session = await lap.sessions.create(agent.id)
        async for record in lap.sessions.stream(session.id, "write hello.txt"):
            print(record.event)

Plugins add sandbox backends, harnesses, stores and integrations through the hooks listed in
docs/plugins.md (implement them with `hookimpl`). Everything public is importable from here
(and test helpers from `lap_core.testing`); modules starting with `_` are private and may change
in any release. docs/api.md is the reference of every name in `__all__`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lap_core._config import read_settings
    from lap_core._egress_policy import EgressPolicy
    from lap_core._errors import (
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
    from lap_core._events import (
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
    from lap_core._harness import CliHarness, Harness, LineMapper, LLMAccess, NativeState, json_object
    from lap_core._hookspecs import hookimpl, hookspec
    from lap_core._integration import Integration
    from lap_core._logging import configure_logging
    from lap_core._metrics import DecisionCollector, UsageCollector
    from lap_core._models import (
        DEFAULT_TEAM_ID,
        Agent,
        ApiKey,
        Budget,
        BusyPolicy,
        Job,
        JobStatus,
        Secret,
        Session,
        SessionStatus,
        Team,
        Turn,
        TurnRecord,
        TurnStatus,
        UsageGroup,
        UsageRecord,
        UsageTotals,
        new_id,
        utcnow,
    )
    from lap_core._runtime import Lap
    from lap_core._sandbox import (
        CA_BUNDLE,
        EGRESS_PROXY_URL,
        HARNESS_ROOT,
        HOME_DIR,
        LLM_BASE_URL,
        VAULT_DIR,
        WORKSPACE_DIR,
        Check,
        DiskUsage,
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
        text_file,
    )
    from lap_core._specs import HarnessSpec, IntegrationSpec, SandboxBackendSpec, SessionStoreSpec
    from lap_core._store import SessionStore, StoreChange

# Imported on first use, so that `import lap_core` (and the `lap` command's start) costs
# little: a plugin that needs only the events does not load the runtime.
_SOURCES = {
    "read_settings": "lap_core._config",
    "EgressPolicy": "lap_core._egress_policy",
    "ConfigError": "lap_core._errors",
    "Conflict": "lap_core._errors",
    "HarnessError": "lap_core._errors",
    "InvalidInput": "lap_core._errors",
    "LapError": "lap_core._errors",
    "NotFound": "lap_core._errors",
    "NotSupported": "lap_core._errors",
    "PluginError": "lap_core._errors",
    "SandboxError": "lap_core._errors",
    "StoreError": "lap_core._errors",
    "EgressDenied": "lap_core._events",
    "Error": "lap_core._events",
    "EventRecord": "lap_core._events",
    "HarnessSession": "lap_core._events",
    "ReasoningDelta": "lap_core._events",
    "SessionEvent": "lap_core._events",
    "Status": "lap_core._events",
    "TextDelta": "lap_core._events",
    "ToolCall": "lap_core._events",
    "ToolResult": "lap_core._events",
    "TurnEnd": "lap_core._events",
    "Usage": "lap_core._events",
    "UserMessage": "lap_core._events",
    "decode_event": "lap_core._events",
    "encode_event": "lap_core._events",
    "CliHarness": "lap_core._harness",
    "Harness": "lap_core._harness",
    "LLMAccess": "lap_core._harness",
    "LineMapper": "lap_core._harness",
    "NativeState": "lap_core._harness",
    "json_object": "lap_core._harness",
    "hookimpl": "lap_core._hookspecs",
    "hookspec": "lap_core._hookspecs",
    "Integration": "lap_core._integration",
    "configure_logging": "lap_core._logging",
    "DecisionCollector": "lap_core._metrics",
    "UsageCollector": "lap_core._metrics",
    "Agent": "lap_core._models",
    "ApiKey": "lap_core._models",
    "Budget": "lap_core._models",
    "BusyPolicy": "lap_core._models",
    "DEFAULT_TEAM_ID": "lap_core._models",
    "Job": "lap_core._models",
    "JobStatus": "lap_core._models",
    "Secret": "lap_core._models",
    "Session": "lap_core._models",
    "SessionStatus": "lap_core._models",
    "Team": "lap_core._models",
    "Turn": "lap_core._models",
    "TurnRecord": "lap_core._models",
    "TurnStatus": "lap_core._models",
    "UsageGroup": "lap_core._models",
    "UsageRecord": "lap_core._models",
    "UsageTotals": "lap_core._models",
    "new_id": "lap_core._models",
    "utcnow": "lap_core._models",
    "Lap": "lap_core._runtime",
    "CA_BUNDLE": "lap_core._sandbox",
    "Check": "lap_core._sandbox",
    "DiskUsage": "lap_core._sandbox",
    "EGRESS_PROXY_URL": "lap_core._sandbox",
    "ExecResult": "lap_core._sandbox",
    "FileSpec": "lap_core._sandbox",
    "HARNESS_ROOT": "lap_core._sandbox",
    "HOME_DIR": "lap_core._sandbox",
    "HydratePayload": "lap_core._sandbox",
    "LLM_BASE_URL": "lap_core._sandbox",
    "OutputRecord": "lap_core._sandbox",
    "ProcessInfo": "lap_core._sandbox",
    "SandboxBackend": "lap_core._sandbox",
    "SandboxClient": "lap_core._sandbox",
    "SandboxContext": "lap_core._sandbox",
    "SandboxRef": "lap_core._sandbox",
    "SandboxSpec": "lap_core._sandbox",
    "SandboxdError": "lap_core._sandbox",
    "StartProcess": "lap_core._sandbox",
    "VAULT_DIR": "lap_core._sandbox",
    "WORKSPACE_DIR": "lap_core._sandbox",
    "text_file": "lap_core._sandbox",
    "HarnessSpec": "lap_core._specs",
    "IntegrationSpec": "lap_core._specs",
    "SandboxBackendSpec": "lap_core._specs",
    "SessionStoreSpec": "lap_core._specs",
    "SessionStore": "lap_core._store",
    "StoreChange": "lap_core._store",
}

__all__ = [
    "CA_BUNDLE",
    "DEFAULT_TEAM_ID",
    "EGRESS_PROXY_URL",
    "HARNESS_ROOT",
    "HOME_DIR",
    "LLM_BASE_URL",
    "VAULT_DIR",
    "WORKSPACE_DIR",
    "Agent",
    "ApiKey",
    "Budget",
    "BusyPolicy",
    "Check",
    "CliHarness",
    "ConfigError",
    "Conflict",
    "DecisionCollector",
    "DiskUsage",
    "EgressDenied",
    "EgressPolicy",
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
    "JobStatus",
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
    "SessionStatus",
    "SessionStore",
    "SessionStoreSpec",
    "StartProcess",
    "Status",
    "StoreChange",
    "StoreError",
    "Team",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "Turn",
    "TurnEnd",
    "TurnRecord",
    "TurnStatus",
    "Usage",
    "UsageCollector",
    "UsageGroup",
    "UsageRecord",
    "UsageTotals",
    "UserMessage",
    "configure_logging",
    "decode_event",
    "encode_event",
    "hookimpl",
    "hookspec",
    "json_object",
    "new_id",
    "read_settings",
    "text_file",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    try:
        module = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module 'lap_core' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
