"""Live fan-out across processes on PostgreSQL: NOTIFY in the writing transaction, LISTEN elsewhere.

A notification is delivered when (and only if) its transaction commits, so a listener that
re-reads the store on it always finds what was written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import asyncpg  # type: ignore[import-untyped]
import structlog

from lap_core import StoreChange

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from piccolo.table import Table

log = structlog.get_logger("lap.sql")

CHANNELS = {"events": "lap_events", "jobs": "lap_jobs", "aborts": "lap_aborts"}
RECONNECT_SECONDS = 1.0


async def notify(table: type[Table], kind: str, session_id: str) -> None:
    """Queue a notification in the caller's transaction (PostgreSQL only)."""
    await table.raw("SELECT pg_notify({}, {})", CHANNELS[kind], session_id)


async def listen(dsn: str) -> AsyncIterator[StoreChange]:
    """Yield the changes other connections commit, reconnecting after a lost connection."""
    kinds = {channel: kind for kind, channel in CHANNELS.items()}
    send, receive = anyio.create_memory_object_stream[StoreChange](math.inf)

    def deliver(_connection: object, _pid: int, channel: str, payload: str) -> None:
        send.send_nowait(StoreChange(kind=kinds[channel], session_id=payload or None))  # type: ignore[arg-type]

    with send, receive:
        while True:
            try:
                connection = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("store.listen_failed", error=repr(error))
                await anyio.sleep(RECONNECT_SECONDS)
                continue
            try:
                for channel in CHANNELS.values():
                    await connection.add_listener(channel, deliver)
                # A reconnect may have missed notifications: tell listeners to re-read everything.
                yield StoreChange(kind="events")
                yield StoreChange(kind="jobs")
                while not connection.is_closed():
                    with anyio.move_on_after(RECONNECT_SECONDS):
                        yield await receive.receive()
            finally:
                with anyio.CancelScope(shield=True):
                    await connection.close(timeout=5)
