"""Errors raised by LAP's public API.

Every error a user can cause derives from `LapError` and carries a stable `code`
(used by the HTTP API's error body and the CLI) and a human message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class LapError(Exception):
    """Base class of LAP's errors: a stable `code` and a message meant for people."""

    code = "lap_error"

    def __init__(self, message: str, *, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class ConfigError(LapError):
    """The configuration is invalid. `problems` maps each failing key to what is wrong with it."""

    code = "config_invalid"

    def __init__(self, problems: dict[str, str]) -> None:
        lines = "\n".join(f"  - {key}: {problem}" for key, problem in sorted(problems.items()))
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}", details=dict(problems))
        self.problems = problems


class PluginError(LapError):
    """A plugin failed to load or registered something invalid; the message names the plugin."""

    code = "plugin_error"


class NotFound(LapError):
    """The named object does not exist (or is not visible to the caller's team)."""

    code = "not_found"


class Conflict(LapError):
    """The request conflicts with the current state (a duplicate name, a busy session)."""

    code = "conflict"


class InvalidInput(LapError):
    """The request is malformed or names an unknown option."""

    code = "invalid_input"


class NotSupported(LapError):
    """The component does not implement this optional capability."""

    code = "not_supported"


class SandboxError(LapError):
    """A sandbox could not be created, reached or used."""

    code = "sandbox_error"


class SandboxdError(LapError):
    """sandboxd answered with an error, or could not be reached.

    Apart from `SandboxError` (a backend's failure): the engine tells a sandboxd that went away
    (`status` 0: the turn re-attaches or starts over) from one that answered.

    Attributes:
        status: The HTTP status of sandboxd's answer; 0 when there was no answer.
        message: sandboxd's error message (or why it could not be reached).
    """

    code = "sandboxd_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, details={"status": status})
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class HarnessError(LapError):
    """The harness failed to run a turn or is not installed."""

    code = "harness_error"


class StoreError(LapError):
    """The session store failed (unreachable database, missing migrations)."""

    code = "store_error"
