"""The egress gateway: every byte a sandbox sends to the network passes here (see `gateway`)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import certifi

from lap_core._egress.gateway import EgressGateway, EgressScope
from lap_core._egress.relay import BoundSecret
from lap_core._egress.resolver import Resolver, parse_hosts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lap_core._config import CoreSettings
    from lap_core._events import SessionEvent

__all__ = ["BoundSecret", "EgressGateway", "EgressScope", "build_gateway"]


def _public_cas() -> bytes:
    """The CA certificates this host trusts (the sandbox's bundle starts with them)."""
    cafile = ssl.get_default_verify_paths().cafile
    path = Path(cafile) if cafile and Path(cafile).is_file() else Path(certifi.where())
    return path.read_bytes()


def build_gateway(
    data_dir: Path,
    settings: CoreSettings,
    *,
    scope_of: Callable[[str], Awaitable[EgressScope | None]],
    note: Callable[[str, SessionEvent], Awaitable[None]],
) -> tuple[EgressGateway, bytes]:
    """Return the gateway of a LAP process and the CA bundle its sandboxes get."""
    from lap_core._egress.certificates import Authority  # cryptography: only where turns run

    authority = Authority.load(data_dir, cert_path=settings.lap_egress_ca_cert, key_path=settings.lap_egress_ca_key)
    upstream_tls = ssl.create_default_context()
    extra = b""
    if settings.lap_egress_trust:
        # Trusted by the gateway (terminated HTTPS) and by sandboxes (tunnels) alike.
        upstream_tls.load_verify_locations(cafile=settings.lap_egress_trust)
        extra = Path(settings.lap_egress_trust).read_bytes().rstrip(b"\n") + b"\n"
    gateway = EgressGateway(
        authority=authority,
        resolver=Resolver(parse_hosts(settings.lap_egress_hosts or "")),
        scope_of=scope_of,
        note=note,
        upstream_tls=upstream_tls,
    )
    bundle = _public_cas().rstrip(b"\n") + b"\n" + extra + authority.cert_pem
    return gateway, bundle
