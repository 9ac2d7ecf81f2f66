"""SessionStore for LAP on piccolo: SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lap_core import SessionStoreSpec, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lap_sql.store import SqlStore

__all__ = ["SqlStore", "lap_session_stores"]


def __getattr__(name: str) -> Any:
    # Imported on first use: every `lap` command loads this plugin, and piccolo is slow to import.
    if name != "SqlStore":
        raise AttributeError(f"module 'lap_sql' has no attribute {name!r}")
    from lap_sql.store import SqlStore

    return SqlStore


@hookimpl
def lap_session_stores() -> Iterator[SessionStoreSpec]:
    """Register `SqlStore` for `sqlite:`, `postgres:` and `postgresql:` URLs."""
    from lap_sql.store import SqlStore

    yield SessionStoreSpec(
        name="sql",
        factory=SqlStore,
        schemes=("sqlite", "postgres", "postgresql"),
        description="SQLite (one file, the embedded default) or PostgreSQL, on piccolo",
    )
