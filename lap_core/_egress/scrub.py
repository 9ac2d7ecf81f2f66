"""Secrets out of what comes back: a host that echoes its request must not hand a secret to the sandbox.

Where the gateway put a secret's value into a request, the answer goes back with that value
replaced by its stub, in the headers and in the body. The body is scrubbed as it streams: each
chunk is passed on but for its last bytes, which may start a value that the next chunk ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Scrubber"]


class Scrubber:
    """Replaces each value by its stub in a stream of bytes (`feed` the chunks, then `end`)."""

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self._pairs = [(value, stub) for value, stub in pairs if value]
        self._keep = max((len(value) for value, _ in self._pairs), default=1) - 1
        self._carry = b""

    def scrub(self, data: bytes) -> bytes:
        """Return `data` with every value replaced (a whole header value, say)."""
        for value, stub in self._pairs:
            data = data.replace(value, stub)
        return data

    def feed(self, chunk: bytes) -> bytes:
        """Return what of the stream so far can be passed on, scrubbed."""
        data = self.scrub(self._carry + chunk)
        if self._keep and len(data) > self._keep:
            data, self._carry = data[: -self._keep], data[-self._keep :]
        elif self._keep:
            data, self._carry = b"", data
        return data

    def end(self) -> bytes:
        """Return the rest of the stream, scrubbed."""
        rest, self._carry = self.scrub(self._carry), b""
        return rest
