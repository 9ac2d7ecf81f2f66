"""The egress gateway, the sandboxes' door to the network (http://127.0.0.1:3128 in every sandbox), and the team
secret behind it (probes in agent/egress.py, run in a1, and agent/egress_closed.py, run in b1).

Team A holds a secret bound to its git host and the echo API beside it; its agent's policy allows the test sites.
The secret's value reaches those hosts only over HTTPS, in place of the session's own stub; everywhere else the stub
goes as the stub, and the sandbox, event logs, API answers and log lines never hold the value (test_zz checks the
last three for every session). No request reaches the host's own services or private addresses, whatever form the
agent gives the address. Team B's agent has no policy: it reaches nothing, and its session hears why."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import ssl
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures import require
from tests.security.recorders import DnsSniffer
from tests.security.runner import ProbeRun, drop_loot, run_probes
from tests.security.world import LOOPBACK_NAME, SECRET_NAME

if TYPE_CHECKING:
    from tests.security.platform import Platform

# A real LAP server on PostgreSQL, real bwrap sandboxes, a real LiteLLM proxy, Codex and the test internet.
pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.postgres]

SANDBOX_PROBES = [
    "secret_stub_in_sandbox_env",
    "private_repository_clones_with_the_token",
    "secret_value_not_in_sandbox",
    "stub_reaches_another_host_as_the_stub",
    "plain_http_never_swaps_the_stub",
    "foreign_secret_stubs_never_swapped",
    "secret_value_never_comes_back_from_its_host",
    "sni_naming_another_host_closes_the_tunnel",
    "secret_only_to_a_server_proving_its_host",
    "host_of_another_host_refused_in_a_tunnel",
    "vault_socket_refuses_egress_without_identity",
    "proxy_env_points_at_the_gateway",
    "egress_private_keys_not_in_sandbox",
]
LOOPBACK = [
    "ipv4_loopback",
    "localhost",
    "unspecified_address",
    "postgres",
    "lap_api",
    "llm_ports",
    "ipv6_loopback",
    "ipv4_mapped_ipv6",
    "decimal_ip",
    "hex_ip",
    "octal_ip",
    "short_ip",
    "wildcard_name_resolving_to_loopback",
    "allowed_name_on_another_port",
    "unused_loopback_address",
]
Closed = tuple[ProbeRun, dict[str, int], DnsSniffer]
REFUSED_TAGS = ["loopback", "sni", "host", "vault", "mitm"]
"""The tags of the requests that had to be refused: none may reach a site."""


def _fingerprint(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


def _params(platform: Platform) -> dict[str, Any]:
    world = platform.world
    return world.params() | {
        "lap_ports": [server.port for server in platform.servers.values()],
        "llm_ports": [platform.litellm.port, int(platform.fake.url.rsplit(":", 1)[1])],
        "ca_fingerprints": {
            "the gateway's CA": _fingerprint((platform.data_dir / "secrets" / "egress-ca.crt").read_bytes()),
            "LAP_EGRESS_TRUST": _fingerprint(world.internet.ca_file.read_bytes()),
        },
    }


def _password(request: dict[str, Any]) -> str | None:
    """The password of a request's HTTP Basic credentials, if it has any."""
    value = request["headers"].get("authorization", "")
    if not value.startswith("Basic "):
        return None
    return base64.b64decode(value[6:]).decode(errors="replace").partition(":")[2]


@pytest.fixture(scope="module")
def egress(platform: Platform) -> ProbeRun:
    """The egress probes in a1, with the secret stubs a colluding agent would pass it: a2's (live), the deleted
    session's and the one a_restarted held before its restart (a revoked generation)."""
    sessions = platform.sessions
    foreign = {
        "live": sessions["a2"].secret_stubs[-1],
        "deleted": sessions["a_deleted"].secret_stubs[-1],
        "revoked": sessions["a_restarted"].secret_stubs[0],
    }
    drop_loot(platform, "a1", "foreign-secret-stubs.json", foreign)
    return run_probes(platform, "a1", "egress", _params(platform))


@pytest.mark.parametrize("name", SANDBOX_PROBES)
def test_egress_from_the_sandbox(egress: ProbeRun, name: str) -> None:
    egress.assert_held(name)


@pytest.mark.parametrize("kind", LOOPBACK)
def test_gateway_refuses_the_hosts_own_services(egress: ProbeRun, kind: str) -> None:
    egress.assert_held(f"gateway_refuses_{kind}")


def _own_stub(platform: Platform) -> str:
    stubs = platform.sessions["a1"].secret_stubs
    assert stubs, "a1 reported no secret stub"
    return stubs[-1]


def test_the_git_server_saw_the_real_token(egress: ProbeRun, platform: Platform) -> None:
    egress.assert_held("private_repository_clones_with_the_token")
    passwords = {_password(request) for request in platform.world.git.requests}
    got_token = platform.world.token in passwords
    assert got_token, "the git server never got the token"
    assert _own_stub(platform) not in passwords, "a1's stub reached its bound host unswapped over HTTPS"


def _shown(platform: Platform, seen: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Requests as a failure message may show them: method and target, the secret's value masked."""
    token = platform.world.token
    return {key: [f"{r['method']} {r['path']}".replace(token, "<value>") for r in found] for key, found in seen.items()}


def _carried(platform: Platform, request: dict[str, Any], stub: str) -> dict[str, bool]:
    """Where a request that the agent sent with its stub in every place still held the stub, and not the value."""
    headers = request["headers"]
    places = {"target": request["path"].endswith(f"t={stub}")}
    if headers.get("authorization", "").startswith("Basic "):
        places["basic"] = _password(request) == stub
    else:
        places["bearer"] = headers.get("authorization") == f"Bearer {stub}"
        places["x-token"] = headers.get("x-token") == stub
    places["no value"] = platform.world.token not in json.dumps(request) and _password(request) != platform.world.token
    return places


def test_the_other_host_got_the_stub(egress: ProbeRun, platform: Platform) -> None:
    stub = _own_stub(platform)
    seen = platform.world.requests_with(f"{egress.nonce}-elsewhere")
    assert list(seen) == ["files"], f"requests seen: {_shown(platform, seen)}"
    carried = _carried(platform, seen["files"][0], stub)
    assert all(carried.values()), f"the request to files.lap-test: {carried}"


def test_plain_http_got_the_stub(egress: ProbeRun, platform: Platform) -> None:
    stub = _own_stub(platform)
    seen = platform.world.requests_with(f"{egress.nonce}-plain")
    assert [len(found) for found in seen.values()] == [2], f"requests seen: {_shown(platform, seen)}"
    assert "plain" in seen
    carried = [_carried(platform, request, stub) for request in seen["plain"]]
    assert all(all(places.values()) for places in carried), f"the plain-HTTP requests to api.lap-test: {carried}"


def test_foreign_stubs_arrived_as_stubs(egress: ProbeRun, platform: Platform) -> None:
    sessions = platform.sessions
    expected = {
        "live": sessions["a2"].secret_stubs[-1],
        "deleted": sessions["a_deleted"].secret_stubs[-1],
        "revoked": sessions["a_restarted"].secret_stubs[0],
    }
    for label, stub in expected.items():
        seen = platform.world.requests_with(f"{egress.nonce}-foreign-{label}")
        assert list(seen) == ["git"], f"{label}: requests seen: {_shown(platform, seen)}"
        passwords = [_password(request) for request in seen["git"]]
        as_sent = passwords == [stub]
        assert as_sent, f"{label}: git.lap-test got the value {passwords.count(platform.world.token)} times"


@pytest.mark.parametrize("tag", REFUSED_TAGS)
def test_refused_requests_reached_no_site(egress: ProbeRun, platform: Platform, tag: str) -> None:
    assert egress.complete, egress.tail()
    seen = platform.world.requests_with(f"{egress.nonce}-{tag}")
    assert not seen, f"refused requests arrived: {_shown(platform, seen)}"


def test_nothing_reached_the_host_loopback(egress: ProbeRun, platform: Platform) -> None:
    assert egress.complete, egress.tail()
    arrived = platform.world.loopback.connections
    assert not arrived, f"{len(arrived)} connections reached the host's loopback port: {arrived[:3]}"
    echoed = [r["path"] for r in platform.echo.received if egress.nonce in r["path"]]
    assert not echoed, f"requests reached the echo server on {platform.echo.port}: {echoed}"


def _denied(platform: Platform, key: str) -> list[dict[str, Any]]:
    return [r["event"] for r in platform.history(key) if r["event"]["type"] == "egress_denied"]


def test_a_refused_private_address_is_an_egress_denied_event(egress: ProbeRun, platform: Platform) -> None:
    assert egress.complete, egress.tail()
    port = platform.world.loopback.port
    denied = [e for e in _denied(platform, "a1") if (e["host"], e["port"]) == (LOOPBACK_NAME, port)]
    assert denied, f"no egress_denied event for {LOOPBACK_NAME}:{port}"
    assert "non-public address" in denied[0]["reason"], denied[0]


def test_secret_stubs_differ_per_session(platform: Platform) -> None:
    stubs = {key: session.secret_stubs for key, session in platform.sessions.items()}
    team_a = [stub for key, held in stubs.items() if platform.sessions[key].team == "a" for stub in held]
    assert len(team_a) >= 5, f"team A's sessions reported {stubs}"
    assert all(stub.startswith("lapsec_") for stub in team_a)
    assert len(set(team_a)) == len(team_a), "two sandboxes of team A hold the same stub"
    assert not [stub for key, held in stubs.items() if platform.sessions[key].team == "b" for stub in held]


def test_secrets_api_never_answers_the_value(platform: Platform) -> None:
    listed = platform.api("a", "GET", "/api/secrets")
    everyone = platform.api("master", "GET", "/api/secrets")
    shown = [platform.world.token in answer.text for answer in (listed, everyone)]
    assert shown == [False, False], "GET /api/secrets answered the value (team key, master key)"
    (secret,) = listed.json()
    assert (secret["name"], secret["hosts"]) == (SECRET_NAME, platform.world.secret()["hosts"])
    assert [s["id"] for s in everyone.json()] == [secret["id"]]
    # Team B neither sees nor deletes team A's secret.
    assert platform.api("b", "GET", "/api/secrets").json() == []
    assert platform.api("b", "DELETE", f"/api/secrets/{secret['id']}").status_code == 404
    assert platform.api("a", "GET", "/api/secrets").json() == [secret]


@pytest.fixture(scope="module")
def closed(platform: Platform) -> tuple[ProbeRun, dict[str, int], DnsSniffer]:
    """The egress probes in b1 (no policy, no secret), how many requests each site had received before, and the
    host's packets that carried the name the probes asked for."""
    require(os.geteuid() == 0, "root (a packet socket sees the DNS queries the host sends)")
    before = {key: len(site.requests) for key, site in platform.world.sites.items()}
    label = f"exfil-{secrets.token_hex(8)}"
    with DnsSniffer(label.encode()) as sniffer:
        run = run_probes(platform, "b1", "egress_closed", platform.world.params() | {"exfil_label": label})
    return run, before, sniffer


@pytest.mark.parametrize(
    "name", ["no_policy_reaches_nothing", "no_secret_stub_without_a_secret", "denied_names_refused"]
)
def test_egress_without_a_policy(closed: Closed, name: str) -> None:
    closed[0].assert_held(name)


def test_without_a_policy_no_site_saw_a_request(closed: Closed, platform: Platform) -> None:
    run, before, _ = closed
    assert run.complete, run.tail()
    after = {key: len(site.requests) for key, site in platform.world.sites.items()}
    assert after == before, f"requests during b1's probes: {before} -> {after}"


def test_a_denied_request_is_an_egress_denied_event(closed: Closed, platform: Platform) -> None:
    assert closed[0].complete, closed[0].tail()
    git = platform.world.git
    denied = [e for e in _denied(platform, "b1") if (e["host"], e["port"]) == (git.name, git.port)]
    assert denied, f"b1's log has no egress_denied event for {git.name}:{git.port}: {_denied(platform, 'b1')}"
    assert "allow list" in denied[0]["reason"], denied[0]


def test_a_denied_name_is_never_looked_up(closed: Closed) -> None:
    """A name no rule allows is refused on its name: the host asks no DNS server about it, so a sandbox cannot use
    the gateway's lookups to send data out (its own DNS is closed: test_boundary's dns_resolution_fails)."""
    run, _, sniffer = closed
    run.assert_held("denied_names_refused")
    assert not sniffer.seen, (
        f"the host sent {len(sniffer.seen)} packets naming {sniffer.marker.decode()}.lap-exfil.test (DNS queries "
        "for a name the sandbox chose, which its policy does not allow)"
    )
