"""Test kit for LAP plugin authors: conformance suites and fixtures (opt-in pytest plugin)."""

import pluggy

from lap_core import _hookspecs
from lap_core.testing.backend import BackendConformance
from lap_core.testing.harness import HarnessConformance, ScriptedLLM
from lap_core.testing.integration import IntegrationConformance, IntegrationStoreConformance, deliveries
from lap_core.testing.jobs import JobQueueConformance
from lap_core.testing.keys import ApiKeyConformance
from lap_core.testing.store import StoreConformance

__all__ = [
    "ApiKeyConformance",
    "BackendConformance",
    "HarnessConformance",
    "IntegrationConformance",
    "IntegrationStoreConformance",
    "JobQueueConformance",
    "ScriptedLLM",
    "StoreConformance",
    "deliveries",
    "plugin_manager",
]


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with LAP's hook specs and only `plugins` registered (modules or objects).

    Test what a plugin registers without loading the installed ones::

        [specs] = plugin_manager(my_plugin).hook.lap_harnesses()
    """
    manager = pluggy.PluginManager(_hookspecs.PROJECT)
    manager.add_hookspecs(_hookspecs)
    for plugin in plugins:
        manager.register(plugin)
    return manager
