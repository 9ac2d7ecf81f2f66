"""SessionStore for LAP on piccolo: SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lap_core import SessionStoreSpec, hookimpl
from lap_sql.store import SqlStore

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["SqlStore", "lap_session_stores"]


@hookimpl
def lap_session_stores() -> Iterator[SessionStoreSpec]:
    """Register `SqlStore` for `sqlite:`, `postgres:` and `postgresql:` URLs."""
    yield SessionStoreSpec(
        name="sql",
        factory=SqlStore,
        schemes=("sqlite", "postgres", "postgresql"),
        description="SQLite (one file, the embedded default) or PostgreSQL, on piccolo",
    )
