"""Request bodies on their way through the proxy: spooled, bounded, and read for their model.

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


class _ModelField(msgspec.Struct):
    model: str | None = None


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

    async def model(self, large_reads: anyio.Semaphore) -> str | None:
        """Return the body's top-level `model` (None if it has none); large bodies hold `large_reads`.

        Raises:
            BodyError: the body is not a JSON object, or its `model` is not a string.
        """
        if self._file is None:
            return _decode_model(self._memory)
        self._file.flush()
        async with large_reads:
            return await anyio.to_thread.run_sync(self._model_of_file, self._file)

    @staticmethod
    def _model_of_file(file: IO[bytes]) -> str | None:
        with mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapping:
            view = memoryview(mapping)
            try:
                return _decode_model(view)
            finally:
                view.release()  # else an exception's traceback keeps the mapping from closing

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


def _decode_model(data: bytes | bytearray | memoryview) -> str | None:
    try:
        # Unknown fields are skipped without building them; a repeated key: the last one wins,
        # as in the gateway's own parser.
        return msgspec.json.decode(data, type=_ModelField).model
    except msgspec.ValidationError as error:
        raise BodyError(f"the body is not a JSON object with a string model: {error}") from error
    except (msgspec.DecodeError, RecursionError) as error:
        raise BodyError(f"the body is not valid JSON: {error}") from error
