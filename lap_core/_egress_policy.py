"""Egress policy: which hosts a sandbox may reach through LAP's egress gateway.

A policy is an allow list and a deny list of rules. A rule is a host name (`github.com`), a
wildcard for the names below a domain (`*.github.com`, which does not match `github.com` itself),
an IP address or a CIDR block (`10.0.0.0/8`), each optionally with a port (`example.com:8443`;
without one, any port). Deny wins over allow; nothing is allowed unless a rule allows it (the
LLM proxy is always reachable: it is not egress). Named presets extend a policy: `"developer"`
opens git hosting and the package registries (`PRESETS`).

Addresses: the gateway resolves names itself and connects to the address it checked. Loopback,
link-local, private, shared, multicast and reserved addresses are refused unless a rule names
them: the host exactly (not a wildcard), or an IP or CIDR that contains the address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

import msgspec

__all__ = ["PRESETS", "EgressPolicy", "EgressRule", "Verdict", "check_rule", "host_matches"]

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")

PRESETS: dict[str, tuple[str, ...]] = {
    "developer": (
        # git hosting
        "github.com",
        "*.github.com",
        "*.githubusercontent.com",
        "gitlab.com",
        "*.gitlab.com",
        "bitbucket.org",
        "*.bitbucket.org",
        # package registries
        "pypi.org",
        "files.pythonhosted.org",
        "registry.npmjs.org",
        "registry.yarnpkg.com",
        "crates.io",
        "static.crates.io",
        "index.crates.io",
        "proxy.golang.org",
        "sum.golang.org",
        "rubygems.org",
        "repo.maven.apache.org",
        "repo1.maven.org",
        "deb.debian.org",
        "security.debian.org",
    ),
}
"""Named sets of allow rules (`EgressPolicy(presets=["developer"])`), documented in docs/egress.md."""

EgressRule = Annotated[str, msgspec.Meta(min_length=1, max_length=260)]


class Verdict(msgspec.Struct, frozen=True):
    """Whether a destination may be reached, why, and whether a rule named it (private addresses)."""

    allowed: bool
    reason: str
    named: bool = False


def check_rule(rule: str) -> str | None:
    """Return what is wrong with a rule, or None if it is one."""
    host, port = _split(rule)
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"{rule!r}: the port must be 1 to 65535"
    try:
        ipaddress.ip_network(host.strip("[]"), strict=False)
    except ValueError:
        if not _HOST.match(host):
            return f"{rule!r}: not a host name, *.domain, IP address or CIDR block"
    return None


def _split(rule: str) -> tuple[str, str | None]:
    rule = rule.strip().lower().rstrip(".")
    if rule.startswith("["):  # [IPv6]:port
        host, _, rest = rule[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if rule.count(":") == 1:
        host, _, port = rule.partition(":")
        return host, port
    return rule, None


def _matches(rule: str, host: str, port: int, addresses: tuple[str, ...]) -> tuple[bool, bool]:
    """Return (matches, names it exactly) for one rule and a destination."""
    pattern, rule_port = _split(rule)
    if rule_port is not None and int(rule_port) != port:
        return False, False
    try:
        network = ipaddress.ip_network(pattern.strip("[]"), strict=False)
    except ValueError:
        pass
    else:
        targets = [host, *addresses]
        hit = any(_in(network, target) for target in targets)
        return hit, hit
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]), False
    return host == pattern, host == pattern


def host_matches(pattern: str, host: str) -> bool:
    """Whether `host` is `pattern` (a name, or `*.domain` for the names below it; no port)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_network(rule: str) -> bool:
    try:
        ipaddress.ip_network(_split(rule)[0].strip("[]"), strict=False)
    except ValueError:
        return False
    return True


def _in(network: ipaddress.IPv4Network | ipaddress.IPv6Network, address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")) in network
    except ValueError:
        return False


def is_public(address: str) -> bool:
    """Whether an address is a global unicast one (not loopback, private, link-local, reserved ...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class EgressPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a sandbox may go: `allow` and `deny` rules and named `presets` (see the module docs)."""

    allow: list[EgressRule] = msgspec.field(default_factory=list)
    deny: list[EgressRule] = msgspec.field(default_factory=list)
    presets: list[str] = msgspec.field(default_factory=list)

    def problems(self) -> list[str]:
        """Return what is wrong with the policy (empty: it is valid)."""
        found = [problem for rule in (*self.allow, *self.deny) if (problem := check_rule(rule))]
        found += [
            f"unknown preset {name!r} (known: {', '.join(PRESETS)})" for name in self.presets if name not in PRESETS
        ]
        return found

    def allow_rules(self) -> tuple[str, ...]:
        """The allow rules with the presets' spelled out."""
        return (*self.allow, *(rule for name in self.presets for rule in PRESETS.get(name, ())))

    def before_resolving(self, host: str, port: int) -> Verdict | None:
        """Decide on a destination by its name alone, if the rules allow (None: resolve it, then `verdict`).

        The gateway asks this first, so that a name no rule could open is never looked up: the
        look-up itself would carry what the agent put in the name to the name's DNS servers.
        """
        host = host.lower().rstrip(".").strip("[]")
        if _is_ip(host):
            return None
        for rule in self.deny:
            if not _is_network(rule) and _matches(rule, host, port, ())[0]:
                return Verdict(allowed=False, reason=f"denied by the rule {rule!r}")
        rules = self.allow_rules()
        if any(_is_network(rule) for rule in rules):
            return None  # an IP or CIDR rule may open it: only its addresses tell
        if not any(_matches(rule, host, port, ())[0] for rule in rules):
            return Verdict(allowed=False, reason=f"{host}:{port} is not in the agent's egress allow list")
        return None

    def verdict(self, host: str, port: int, addresses: tuple[str, ...] = ()) -> Verdict:
        """Decide on a destination: a host (name or IP literal), a port and the addresses it resolved to."""
        host = host.lower().rstrip(".").strip("[]")
        for rule in self.deny:
            if _matches(rule, host, port, addresses)[0]:
                return Verdict(allowed=False, reason=f"denied by the rule {rule!r}")
        named = False
        allowed_by = None
        for rule in self.allow_rules():
            hit, exact = _matches(rule, host, port, addresses)
            if hit:
                allowed_by = allowed_by or rule
                named = named or exact
        if allowed_by is None:
            return Verdict(allowed=False, reason=f"{host}:{port} is not in the agent's egress allow list")
        private = [a for a in addresses if not is_public(a)]
        if private and not named:
            return Verdict(
                allowed=False,
                reason=f"{host} resolves to a non-public address ({private[0]}): only a rule naming it opens that",
            )
        return Verdict(allowed=True, reason=f"allowed by {allowed_by!r}", named=named)
