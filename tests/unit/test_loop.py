"""The benign cancelled-wakeup race is kept out of the logs; every other loop error still gets through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lap_core._loop import quiet_cancelled_wakeups

pytestmark = pytest.mark.anyio


def _boom() -> None:
    raise ValueError("a real bug")


async def test_only_the_cancelled_wakeup_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []

    def recording(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)

    loop.set_exception_handler(recording)
    try:
        with quiet_cancelled_wakeups():
            waiter = loop.create_future()
            waiter.cancel()
            loop.call_soon(waiter.set_result, None)  # what anyio's add_reader callback does
            loop.call_soon(_boom)
            await asyncio.sleep(0.01)
        assert [type(context["exception"]) for context in seen] == [ValueError]
        assert loop.get_exception_handler() is recording
        waiter = loop.create_future()
        waiter.cancel()
        loop.call_soon(waiter.set_result, None)
        await asyncio.sleep(0.01)
        assert [type(context["exception"]) for context in seen] == [ValueError, asyncio.InvalidStateError]
    finally:
        loop.set_exception_handler(None)
