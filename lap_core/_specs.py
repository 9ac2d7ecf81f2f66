"""The typed records that LAP's hooks return.

A plugin's hook implementation yields these; LAP collects them at start-up and builds the
selected components from their `factory` with validated `settings` (see `lap_core._hookspecs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

SettingsType = type[msgspec.Struct] | None


class _Spec(msgspec.Struct, frozen=True, kw_only=True):
    """Common fields: `factory` is called with the validated `settings` struct as its first argument
    when `settings` names a struct type (its fields are read from the environment), else without it."""

    name: str
    factory: Callable[..., Any]
    settings: SettingsType = None
    description: str = ""


class SandboxBackendSpec(_Spec, frozen=True):
    """A sandbox backend. `factory([settings,] context=SandboxContext)` returns a `SandboxBackend`."""


class HarnessSpec(_Spec, frozen=True):
    """A harness. `factory([settings])` returns a `Harness`."""


class SessionStoreSpec(_Spec, frozen=True):
    """A session store, chosen when `DATABASE_URL`'s scheme is one of `schemes`.

    `factory(url)` returns a `SessionStore`. When `DATABASE_URL` is unset LAP passes
    `sqlite:///<data dir>/lap.db`.
    """

    schemes: tuple[str, ...] = ()


class IntegrationSpec(_Spec, frozen=True):
    """An integration (e.g. Linear). `factory([settings])` returns an `Integration`."""
