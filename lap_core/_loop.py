"""Keep a benign asyncio race out of the logs.

anyio's unix-socket streams wait for a socket by `loop.add_reader(sock, future.set_result, None)`.
When the wait is cancelled in the same loop iteration as the socket becomes readable, the queued
callback meets a cancelled future and asyncio logs `InvalidStateError` as an unhandled traceback
(anyio 4.16; agronholm/anyio#1267 is the `aclose` side of it). Nothing is lost: the read was
cancelled on purpose. LAP cancels such reads routinely (followers, sandboxd output streams).
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator

log = structlog.get_logger("lap")


def _is_cancelled_wakeup(context: dict[str, Any]) -> bool:
    callback = getattr(context.get("handle"), "_callback", None)
    target = getattr(callback, "__self__", None)
    return (
        isinstance(context.get("exception"), asyncio.InvalidStateError)
        and getattr(callback, "__name__", "") == "set_result"
        and isinstance(target, asyncio.Future)
        and target.cancelled()
    )


@contextmanager
def quiet_cancelled_wakeups() -> Iterator[None]:
    """While inside, drop that one benign error; every other one goes to the loop's own handler."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio
        yield
        return
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_cancelled_wakeup(context):
            log.debug("asyncio.cancelled_wakeup_ignored")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
