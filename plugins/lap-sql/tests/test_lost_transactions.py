"""A transaction whose COMMIT fails because the server went away leaves its task able to go on."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from lap_core import StoreError
from lap_sql._database import Database

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_a_commit_that_meets_a_dead_connection_does_not_poison_the_task(pg_database: str) -> None:
    database = Database(pg_database)
    await database.open()
    admin = await asyncpg.connect(pg_database)
    try:

        async def lose_the_connection_mid_transaction() -> None:
            async with database.write():
                pid = (await database.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]
                # The server drops this transaction's connection (a restart, a failover): COMMIT fails.
                await admin.execute("SELECT pg_terminate_backend($1)", pid)

        with pytest.raises(StoreError, match="cannot reach the database"):
            await lose_the_connection_mid_transaction()
        # The same task, later: a fresh connection from the pool, not the dead transaction's.
        assert (await database.fetch("SELECT 1 AS one"))[0]["one"] == 1
        async with database.write():
            assert (await database.fetch("SELECT 2 AS two"))[0]["two"] == 2
    finally:
        await admin.close()
        await database.aclose()
