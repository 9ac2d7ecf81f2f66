"""Driver errors become LAP's: a database that goes away is a `StoreError` (an outage), never a crash."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from lap_core import StoreError
from lap_sql._db import translate_errors


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_database_going_away_is_an_outage_not_a_bug(error: Exception) -> None:
    # The engine pauses a turn on `StoreError` (and resumes it later); anything else fails the turn.
    with pytest.raises(StoreError, match="cannot reach the database"), translate_errors("postgresql://db/x"):
        raise error
