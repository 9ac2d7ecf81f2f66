"""Test kit for LAP plugin authors: conformance suites and fixtures (opt-in pytest plugin)."""

from lap_core.testing.backend import BackendConformance
from lap_core.testing.harness import HarnessConformance, ScriptedLLM
from lap_core.testing.jobs import JobQueueConformance
from lap_core.testing.keys import ApiKeyConformance
from lap_core.testing.store import StoreConformance

__all__ = [
    "ApiKeyConformance",
    "BackendConformance",
    "HarnessConformance",
    "JobQueueConformance",
    "ScriptedLLM",
    "StoreConformance",
]
