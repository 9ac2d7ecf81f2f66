"""The docs keep up with the code: every hook and every setting is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

import msgspec
import pytest

from lap_core import hookspecs
from lap_core._config import CoreSettings
from lap_local import LocalSettings
from lap_server import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
HOOKS = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lap_")]


def test_there_are_hooks_to_document() -> None:
    assert {"lap_sandbox_backends", "lap_harnesses", "lap_session_stores", "lap_integrations", "lap_addhooks"} <= set(
        HOOKS
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_plugin_guide(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(" in guide
    assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"{hook} has no docstring"


@pytest.mark.parametrize(
    "variable",
    [f.encode_name for t in (CoreSettings, LocalSettings, ServerSettings) for f in msgspec.structs.fields(t)],
)
def test_every_setting_is_in_the_readme(variable: str) -> None:
    assert f"`{variable}`" in (ROOT / "README.md").read_text()
