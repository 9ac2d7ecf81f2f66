"""Name resolution for the egress gateway: the gateway resolves names itself, once, and connects to
the address it checked (a name that resolves elsewhere a moment later changes nothing).

`LAP_EGRESS_HOSTS` (`name=address,...`) pins names to addresses before DNS is asked, like an
/etc/hosts of the gateway's own: for air-gapped mirrors, and for the tests' loopback servers.
"""

from __future__ import annotations

import ipaddress
import socket

import anyio

__all__ = ["Resolver", "parse_hosts"]


def parse_hosts(value: str) -> dict[str, tuple[str, ...]]:
    """Parse `name=address[|address...],...`; raise ValueError naming the bad entry."""
    hosts: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, sep, addresses = entry.partition("=")
        if not sep or not name:
            raise ValueError(f"{entry!r}: expected name=address")
        parsed = []
        for address in addresses.split("|"):
            try:
                parsed.append(str(ipaddress.ip_address(address.strip())))
            except ValueError:
                raise ValueError(f"{entry!r}: {address!r} is not an IP address") from None
        hosts[name.strip().lower().rstrip(".")] = tuple(parsed)
    return hosts


class Resolver:
    """Resolves a host to its addresses: an IP literal to itself, pinned names first, then DNS."""

    def __init__(self, pinned: dict[str, tuple[str, ...]] | None = None, *, timeout: float = 10.0) -> None:
        self._pinned = pinned or {}
        self._timeout = timeout

    async def resolve(self, host: str, port: int) -> tuple[str, ...]:
        """Return the addresses of `host` (empty if it does not resolve)."""
        host = host.lower().rstrip(".").strip("[]")
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        if host in self._pinned:
            return self._pinned[host]
        with anyio.move_on_after(self._timeout):
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                return ()
            return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        return ()
