"""Request bodies on their way through the proxy: spooled, bounded, and read for their model and streaming.

A body has to be whole before the proxy may forward it: the model it names decides whether it
goes out at all, and a JSON object's last `model` key is the one the gateway reads. So bodies are
kept, but not in memory: past `IN_MEMORY` bytes they go to an unlinked temporary file, and the
model is read from a read-only mapping of it, one large body at a time (the proxy's semaphore),
so what many connections send at once costs the host disk, not memory.
"""

from __future__ import annotations

import mmap
import tempfile
from typing import IO, TYPE_CHECKING

import anyio
import msgspec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

IN_MEMORY = 1024 * 1024
"""Bytes of a body kept in memory; the rest goes to a temporary file."""
_CHUNK = 64 * 1024
_WHITESPACE = b" \t\r\n"  # JSON's


class StreamOptions(msgspec.Struct):
    """A chat completion's `stream_options` (what the metering needs of it)."""

    include_usage: bool | msgspec.UnsetType | None = msgspec.UNSET


class RequestFields(msgspec.Struct):
    """The fields of a request body the proxy reads: its model, and whether and how it streams."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | msgspec.UnsetType | None = msgspec.UNSET


class BodyError(Exception):
    """The body is not a JSON object with a usable `model`."""


class SpooledBody:
    """A request body: in memory while small, in an unlinked temporary file beyond `IN_MEMORY`."""

    def __init__(self) -> None:
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append `data`."""
        self.size += len(data)
        if self._file is None and len(self._memory) + len(data) <= IN_MEMORY:
            self._memory += data
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="lap-vault-")
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(data)

    async def fields(self, large_reads: anyio.Semaphore) -> RequestFields:
        """Return the body's top-level `model`, `stream` and `stream_options`; large bodies hold `large_reads`.

        Raises:
            BodyError: the body is not a JSON object, or one of these fields has the wrong type.
        """
        if self._file is None:
            return _decode_fields(self._memory)
        self._file.flush()
        async with large_reads:
            return await anyio.to_thread.run_sync(self._fields_of_file, self._file)

    @staticmethod
    def _fields_of_file(file: IO[bytes]) -> RequestFields:
        with mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapping:
            view = memoryview(mapping)
            try:
                return _decode_fields(view)
            finally:
                view.release()  # else an exception's traceback keeps the mapping from closing

    def extend_object(self, members: bytes) -> bool:
        """Add `members` (`,"name":value`) at the end of the body's JSON object; False if it ends otherwise.

        A member named again wins over the first in the gateway's parser (the last one wins).
        """
        if self._file is None:
            end = len(self._memory.rstrip(_WHITESPACE))
            if not end or self._memory[end - 1 : end] != b"}":
                return False
            self._memory[end - 1 : end - 1] = members
            self.size += len(members)
            return True
        end = self.size
        while end > 0:  # the last byte that is not whitespace
            start = max(0, end - _CHUNK)
            self._file.seek(start)
            block = self._file.read(end - start).rstrip(_WHITESPACE)
            if block:
                if not block.endswith(b"}"):
                    return False
                self._file.seek(start + len(block) - 1)
                tail = self._file.read()
                self._file.seek(start + len(block) - 1)
                self._file.write(members + tail)
                self.size += len(members)
                return True
            end = start
        return False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body from its start, in chunks."""
        if self._file is None:
            if self._memory:
                yield bytes(self._memory)
            return
        self._file.seek(0)
        while chunk := await anyio.to_thread.run_sync(self._file.read, _CHUNK):
            yield chunk

    def close(self) -> None:
        """Free the memory and the temporary file."""
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode_fields(data: bytes | bytearray | memoryview) -> RequestFields:
    try:
        # Unknown fields are skipped without building them; a repeated key: the last one wins,
        # as in the gateway's own parser.
        return msgspec.json.decode(data, type=RequestFields)
    except msgspec.ValidationError as error:
        raise BodyError(f"the body is not a JSON object with a string model: {error}") from error
    except (msgspec.DecodeError, RecursionError) as error:
        raise BodyError(f"the body is not valid JSON: {error}") from error
