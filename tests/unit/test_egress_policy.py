"""Egress policies decided by name first (a denied name is never looked up), and answers scrubbed of secrets."""

from __future__ import annotations

import pytest

from lap_core import EgressPolicy
from lap_core._egress.scrub import Scrubber


@pytest.mark.parametrize(
    ("policy", "host", "before"),
    [
        (EgressPolicy(), "exfil-data.attacker.example", "denied"),  # no rule: never resolved
        (EgressPolicy(allow=["github.com"]), "data.attacker.example", "denied"),
        (EgressPolicy(allow=["*.github.com"]), "api.github.com", None),  # resolve, then decide on the addresses
        (EgressPolicy(allow=["github.com"], deny=["github.com"]), "github.com", "denied"),
        (EgressPolicy(allow=["10.0.0.0/8"]), "anything.example", None),  # only its addresses tell
        (EgressPolicy(allow=["github.com"]), "140.82.112.3", None),  # IP literals need no look-up
    ],
)
def test_a_name_no_rule_can_open_is_refused_before_it_is_resolved(
    policy: EgressPolicy, host: str, before: str | None
) -> None:
    verdict = policy.before_resolving(host, 443)
    assert (None if verdict is None else ("allowed" if verdict.allowed else "denied")) == before


def test_addresses_decide_the_rest() -> None:
    policy = EgressPolicy(allow=["*.example.com", "10.1.0.0/16"], deny=["10.1.2.0/24"])
    assert policy.verdict("a.example.com", 443, ("93.184.216.34",)).allowed
    assert not policy.verdict("a.example.com", 443, ("127.0.0.1",)).allowed  # a wildcard opens no private address
    assert policy.verdict("db.internal", 5432, ("10.1.3.4",)).allowed  # named by its CIDR
    assert not policy.verdict("db.internal", 5432, ("10.1.2.4",)).allowed  # denied by address
    assert not policy.verdict("a.example.com", 443, ("::ffff:127.0.0.1",)).allowed


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_scrubber_replaces_values_split_across_chunks(size: int) -> None:
    value, stub = b"ghp_real-value-123", b"lapsec_stub"
    stream = b"echo: " + value + b" and again " + value + b"!" + value
    scrubber = Scrubber([(value, stub)])
    out = b"".join(scrubber.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + scrubber.end()
    assert out == stream.replace(value, stub)
    assert value not in out


def test_a_scrubber_passes_other_bytes_at_once_but_for_a_short_tail() -> None:
    scrubber = Scrubber([(b"secret", b"stub")])
    assert scrubber.feed(b"hello world") == b"hello "  # the last 5 bytes could start "secret"
    assert scrubber.end() == b"world"
    assert Scrubber([]).feed(b"as it is") == b"as it is"
