"""The server name a TLS client asks for (SNI), read from its ClientHello without taking part in TLS.

The gateway reads the first bytes a sandbox sends in a CONNECT tunnel: the name must be the
CONNECT host, or the tunnel is closed (a client may not ask for an allowed host and present
another inside). The bytes read are passed on unchanged.
"""

from __future__ import annotations

import struct

__all__ = ["MAX_HELLO", "ClientHelloError", "client_hello_length", "server_name"]

MAX_HELLO = 64 * 1024
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000


class ClientHelloError(ValueError):
    """The bytes are not the start of a TLS ClientHello."""


def client_hello_length(data: bytes) -> int | None:
    """Return how many bytes the records holding the whole ClientHello take (None: need more bytes)."""
    if len(data) >= 1 and data[0] != _HANDSHAKE:
        raise ClientHelloError("not a TLS handshake")
    body = b""
    offset = 0
    while True:
        if len(data) < offset + 5:
            return None
        record_type, _, length = (int(field) for field in struct.unpack_from("!BHH", data, offset))
        if record_type != _HANDSHAKE:
            raise ClientHelloError("the ClientHello is interrupted by another record")
        if len(data) < offset + 5 + length:
            return None
        body += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(body) >= 4:
            if body[0] != _CLIENT_HELLO:
                raise ClientHelloError("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(body[1:4], "big")
            if needed > MAX_HELLO:
                raise ClientHelloError("the ClientHello is too large")
            if len(body) >= needed:
                return offset


def _handshake_body(data: bytes) -> bytes:
    body = b""
    offset = 0
    while offset + 5 <= len(data):
        length = struct.unpack_from("!H", data, offset + 3)[0]
        body += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return body[4 : 4 + int.from_bytes(body[1:4], "big")]


def server_name(data: bytes) -> str | None:
    """Return the host name of a whole ClientHello's SNI extension (None: it names none)."""
    hello = _handshake_body(data)
    try:
        offset = 2 + 32  # version, random
        offset += 1 + hello[offset]  # session id
        offset += 2 + int.from_bytes(hello[offset : offset + 2], "big")  # cipher suites
        offset += 1 + hello[offset]  # compression methods
        if offset + 2 > len(hello):
            return None
        end = offset + 2 + int.from_bytes(hello[offset : offset + 2], "big")
        offset += 2
        while offset + 4 <= end:
            kind, length = struct.unpack_from("!HH", hello, offset)
            offset += 4
            if kind == _SERVER_NAME:
                names = hello[offset : offset + length]
                position = 2
                while position + 3 <= len(names):
                    name_type, name_length = names[position], int.from_bytes(names[position + 1 : position + 3], "big")
                    position += 3
                    if name_type == 0:
                        return names[position : position + name_length].decode("ascii").lower().rstrip(".")
                    position += name_length
                return None
            offset += length
    except (IndexError, struct.error, UnicodeDecodeError) as error:
        raise ClientHelloError(f"a malformed ClientHello: {error}") from None
    return None
