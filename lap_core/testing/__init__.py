"""Test kit for LAP plugin authors: conformance suites, a fake LLM, and fixtures (the pytest plugin
`lap_core.testing.pytest_plugin`).

Names are imported on first use, as in `lap_core`: loading the pytest plugin, which every pytest
run of a project with LAP installed may do, costs only what it uses.
"""

from typing import TYPE_CHECKING, Any

from lap_core._lazy import lazy_attribute

if TYPE_CHECKING:
    import pluggy

    from lap_core.testing.backend import BackendConformance
    from lap_core.testing.fake_llm import FakeLLM
    from lap_core.testing.harness import HarnessConformance, ScriptedLLM
    from lap_core.testing.integration import IntegrationConformance, IntegrationStoreConformance, deliveries
    from lap_core.testing.jobs import JobQueueConformance
    from lap_core.testing.keys import ApiKeyConformance
    from lap_core.testing.store import StoreConformance

_SOURCES = {
    "ApiKeyConformance": "lap_core.testing.keys",
    "BackendConformance": "lap_core.testing.backend",
    "FakeLLM": "lap_core.testing.fake_llm",
    "HarnessConformance": "lap_core.testing.harness",
    "IntegrationConformance": "lap_core.testing.integration",
    "IntegrationStoreConformance": "lap_core.testing.integration",
    "JobQueueConformance": "lap_core.testing.jobs",
    "ScriptedLLM": "lap_core.testing.harness",
    "StoreConformance": "lap_core.testing.store",
    "deliveries": "lap_core.testing.integration",
}

__all__ = [
    "ApiKeyConformance",
    "BackendConformance",
    "FakeLLM",
    "HarnessConformance",
    "IntegrationConformance",
    "IntegrationStoreConformance",
    "JobQueueConformance",
    "ScriptedLLM",
    "StoreConformance",
    "deliveries",
    "plugin_manager",
]


def plugin_manager(*plugins: object) -> "pluggy.PluginManager":
    """A plugin manager with LAP's hook specs and only `plugins` registered (modules or objects).

    Test what a plugin registers without loading the installed ones::

        [specs] = plugin_manager(my_plugin).hook.lap_harnesses()
    """
    import pluggy

    from lap_core import _hookspecs

    manager = pluggy.PluginManager(_hookspecs.PROJECT)
    manager.add_hookspecs(_hookspecs)
    for plugin in plugins:
        manager.register(plugin)
    return manager


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _SOURCES, globals(), name)


def __dir__() -> list[str]:
    return __all__
