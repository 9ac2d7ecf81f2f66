"""Byte-stream plumbing of the egress gateway: a stream with bytes already read put back, and a splice."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import ByteStream

__all__ = ["GONE", "Prefixed", "splice"]

GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
"""What a stream raises when its other end went away."""


class Prefixed(ByteStream):
    """`stream`, with `data` (bytes already read from it) to be received again first."""

    def __init__(self, stream: ByteStream, data: bytes) -> None:
        self._stream = stream
        self._data = data

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._data:
            chunk, self._data = self._data[:max_bytes], self._data[max_bytes:]
            return chunk
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._stream.extra_attributes


async def _pump(source: ByteStream, target: ByteStream, counted: list[int]) -> None:
    try:
        while True:
            data = await source.receive(1024 * 1024)
            counted[0] += len(data)
            await target.send(data)
    except GONE:
        pass
    try:
        await target.send_eof()
    except (*GONE, NotImplementedError):
        pass


async def splice(a: ByteStream, b: ByteStream) -> tuple[int, int]:
    """Copy both ways until both ends are done (an end passes its EOF on); return the bytes a->b, b->a."""
    ab, ba = [0], [0]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_pump, a, b, ab)
        tasks.start_soon(_pump, b, a, ba)
    return ab[0], ba[0]
