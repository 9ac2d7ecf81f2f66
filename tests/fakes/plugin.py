"""A LAP plugin for tests: the process sandbox backend and the scripted harness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import HarnessSpec, SandboxBackendSpec, hookimpl
from tests.fakes.process_backend import ProcessBackend, SuspendingProcessBackend
from tests.fakes.script_harness import ScriptHarness

if TYPE_CHECKING:
    from collections.abc import Iterator


class FakesPlugin:
    """Registers backends `process` (and `process-suspend`, which can suspend) and harness `script`,
    keeping the instances for assertions."""

    def __init__(self) -> None:
        self.harness = ScriptHarness()
        self.backend: ProcessBackend | None = None

    def _backend(self, **kwargs: object) -> ProcessBackend:
        self.backend = ProcessBackend(**kwargs)  # type: ignore[arg-type]
        return self.backend

    def _suspending_backend(self, **kwargs: object) -> ProcessBackend:
        self.backend = SuspendingProcessBackend(**kwargs)  # type: ignore[arg-type]
        return self.backend

    @hookimpl
    def lap_sandbox_backends(self) -> Iterator[SandboxBackendSpec]:
        yield SandboxBackendSpec(name="process", factory=self._backend)
        yield SandboxBackendSpec(name="process-suspend", factory=self._suspending_backend)

    @hookimpl
    def lap_harnesses(self) -> Iterator[HarnessSpec]:
        yield HarnessSpec(name="script", factory=lambda: self.harness)
