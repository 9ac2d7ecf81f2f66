"""The egress gateway (http://127.0.0.1:3128) from team A's sandbox: the team secret's stub and value, what reaches
which host, the host's own services and private addresses, SNI and Host tricks, the vault's socket, the proxy
settings and the gateway's private keys. Requests that must be refused carry the nonce and a tag in their target,
so the host can tell that none of them reached a server."""

import base64
import hashlib
import os
import re
import socket
import ssl
import subprocess

from kit import PARAMS, SECRETS, STUB, emit, environ_of, loot, pids, probe, read, secrets_in, short, unix_sockets, walk

GATEWAY = ("127.0.0.1", 3128)
PROXY_URL = "http://127.0.0.1:3128"
NONCE = PARAMS["nonce"]
SITES = PARAMS["sites"]
NAME = PARAMS["secret_name"]
SECRET_STUB = os.environ.get(NAME, "")
VALUE = [s for s in SECRETS if s["label"] == "team_secret"]
KEYS = [s for s in SECRETS if s["label"].startswith("egress_key_")]


def status_of(answer):
    try:
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
    except (IndexError, ValueError):
        return None


def read_head(sock):
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    except OSError:
        pass
    return status_of(data)


def exchange(sock, raw):
    """Send raw bytes and read until the other side closes: (status, the whole answer, error)."""
    chunks, error = [], ""
    try:
        sock.sendall(raw)
        while data := sock.recv(65536):
            chunks.append(data)
    except OSError as failure:
        error = f"{type(failure).__name__}: {failure}"
    answer = b"".join(chunks)
    return status_of(answer), answer, error


def request(method, target, host, headers=()):
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def tunnel(host, port):
    """A connection to the gateway that asked for `CONNECT host:port`: (status, socket)."""
    sock = socket.create_connection(GATEWAY, timeout=8)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return read_head(sock), sock


def tls(sock, name, verify=True):
    """TLS over `sock` asking for `name` (SNI); `verify`: with the sandbox's CA bundle, else trusting anything."""
    if verify:
        context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=name)


def https(site, target, headers=(), host=None):
    """One HTTPS request to a site through a CONNECT tunnel: (status, answer, error)."""
    try:
        status, sock = tunnel(site["host"], site["port"])
        with sock:
            if status != 200:
                return status, b"", f"CONNECT answered {status}"
            with tls(sock, site["host"]) as conn:
                return exchange(conn, request("GET", target, host or f"{site['host']}:{site['port']}", headers))
    except OSError as error:
        return None, b"", f"{type(error).__name__}: {error}"


def plain(url, headers=(), host=None, address=GATEWAY, preamble=b""):
    """One plain-HTTP proxy request (absolute form) to `address`: (status, answer, error)."""
    try:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family) as sock:
            sock.settimeout(8)
            sock.connect(address)
            return exchange(sock, preamble + request("GET", url, host or url.split("/")[2], headers))
    except OSError as error:
        return None, b"", f"{type(error).__name__}: {error}"


def basic(password):
    return "Basic " + base64.b64encode(f"x-access-token:{password}".encode()).decode()


@probe("secret_stub_in_sandbox_env")
def _stub_in_env():
    shaped = re.fullmatch(r"lapsec_[a-z2-7]{32}", SECRET_STUB) is not None
    in_proc = bool(SECRET_STUB) and f"{NAME}={SECRET_STUB}".encode() in (read("/proc/self/environ") or b"")
    holders = [pid for pid in pids() if NAME in environ_of(pid)]
    return (
        shaped and in_proc,
        f"{NAME}: a stub of the right shape {shaped}, in /proc/self/environ {in_proc}; "
        f"processes holding {NAME}: {holders}",
    )


@probe("private_repository_clones_with_the_token")
def _clone():
    helper = f'!f() {{ echo username=x-access-token; echo "password=${NAME}"; }}; f'
    url = f"{SITES['git']['url']}/app"
    done = subprocess.run(
        ["git", "-c", f"credential.helper={helper}", "clone", "-q", url, "/tmp/private-app"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    readme = read("/tmp/private-app/README.md") or b""
    held = done.returncode == 0 and readme.decode() == PARAMS["readme"]
    return held, f"git clone {url}: rc {done.returncode}, README {short(readme, 60)} {done.stderr[-300:]}"


@probe("secret_value_not_in_sandbox")
def _value_nowhere():
    if not VALUE:
        return False, "the test described no secret value"
    places = []
    if secrets_in("\0".join(f"{k}={v}" for k, v in os.environ.items()).encode(), VALUE):
        places.append("os.environ")
    files = [f"/proc/{pid}/{kind}" for pid in pids() for kind in ("environ", "cmdline")]
    tops = ["/workspace", os.path.expanduser("~"), "/tmp", "/run", "/etc", "/var", "/opt", "/home"]
    files += [path for top in tops for path in walk(top)]
    places += [path for path in files if secrets_in(read(path) or b"", VALUE)]
    return not places, f"the value in {places}" if places else f"{len(files)} places (the clone too), no value"


@probe("stub_reaches_another_host_as_the_stub")
def _elsewhere():
    headers = [("Authorization", f"Bearer {SECRET_STUB}"), ("X-Token", SECRET_STUB)]
    status, answer, error = https(SITES["files"], f"/hello.txt?n={NONCE}-elsewhere&t={SECRET_STUB}", headers)
    return status == 200 and not secrets_in(answer, VALUE), f"{status} {error}"


@probe("plain_http_never_swaps_the_stub")
def _plain():
    url = f"{SITES['plain']['url']}/plain?n={NONCE}-plain&t={SECRET_STUB}"
    answers = [
        plain(url, [("Authorization", f"Bearer {SECRET_STUB}"), ("X-Token", SECRET_STUB)]),
        plain(url, [("Authorization", basic(SECRET_STUB))]),
    ]
    came_back = [SECRET_STUB.encode() in answer for _, answer, _ in answers]
    values = [bool(secrets_in(answer, VALUE)) for _, answer, _ in answers]
    held = all(status == 200 for status, _, _ in answers) and all(came_back) and not any(values)
    detail = f"statuses {[s for s, _, _ in answers]}; the echo saw the stub {came_back}, the value {values}"
    return held, detail + " ".join(e for _, _, e in answers)


@probe("foreign_secret_stubs_never_swapped")
def _foreign():
    foreign = loot("foreign-secret-stubs.json", {})
    if not foreign:
        return False, "the test dropped no stubs"
    statuses = {}
    for label, stub in sorted(foreign.items()):
        target = f"/app/info/refs?service=git-upload-pack&n={NONCE}-foreign-{label}"
        status, answer, _ = https(SITES["git"], target, [("Authorization", basic(stub))])
        statuses[label] = (status, bool(secrets_in(answer, VALUE)))
    # The git server refuses a stub: only the value (this sandbox's stub, swapped) opens the repository.
    held = all(status == 401 and not value for status, value in statuses.values())
    return held, f"(status, the value came back) by stub: {statuses}"


@probe("secret_value_never_comes_back_from_its_host")
def _reflected():
    # api.lap-test is one of the secret's hosts and answers with what it received, as httpbin's /anything does (and
    # as redirects, search pages and error pages echo a request's target): the value must not reach the sandbox.
    tries = {
        "stub in Authorization": (f"/anything?n={NONCE}-reflect", [("Authorization", f"Bearer {SECRET_STUB}")]),
        "stub in the query": (f"/anything?n={NONCE}-reflect&q={SECRET_STUB}", []),
    }
    outcomes = {}
    for what, (target, headers) in tries.items():
        status, answer, error = https(SITES["api"], target, headers)
        outcomes[what] = f"{status} {error}" + (", the value came back" if secrets_in(answer, VALUE) else "")
    held = all(outcome.startswith("200") and "value" not in outcome for outcome in outcomes.values())
    return held, str(outcomes)


REC = PARAMS["loopback_port"]
GIT = SITES["git"]["host"]
LOOPBACK = {
    "ipv4_loopback": [("127.0.0.1", REC)],
    "localhost": [("localhost", REC), ("LOCALHOST.", REC)],
    "unspecified_address": [("0.0.0.0", REC), ("[::]", REC), ("0", REC)],
    "postgres": [("127.0.0.1", 5432), ("localhost", 5432)],
    "lap_api": [("127.0.0.1", port) for port in PARAMS["lap_ports"]],
    "llm_ports": [("127.0.0.1", port) for port in PARAMS["llm_ports"]],
    "ipv6_loopback": [("[::1]", REC), ("[0:0:0:0:0:0:0:1]", REC)],
    "ipv4_mapped_ipv6": [("[::ffff:127.0.0.1]", REC), ("[::ffff:7f00:1]", REC)],
    "decimal_ip": [("2130706433", REC)],
    "hex_ip": [("0x7f000001", REC), ("0x7f.0.0.1", REC)],
    "octal_ip": [("0177.0.0.1", REC), ("017700000001", REC)],
    "short_ip": [("127.1", REC)],
    "wildcard_name_resolving_to_loopback": [(PARAMS["loopback_name"], REC)],
    "allowed_name_on_another_port": [(GIT, 5432), (GIT, REC)],
    "unused_loopback_address": [(PARAMS["echo_host"], PARAMS["echo_port"])],
}


def _connect_refused(host, port):
    try:
        status, sock = tunnel(host, port)
        with sock:
            if status == 200:  # let through: push a ClientHello so whatever listens there gets a connection
                try:
                    with tls(sock, None if host[0].isdigit() or host[0] == "[" else host, verify=False) as conn:
                        conn.sendall(request("GET", f"/{NONCE}-loopback", f"{host}:{port}"))
                except OSError:
                    pass
            return status
    except OSError as error:
        return type(error).__name__


for kind, targets in LOOPBACK.items():
    outcomes = []
    for host, port in targets:
        outcomes.append((f"CONNECT {host}:{port}", _connect_refused(host, port)))
        outcomes.append((f"GET http://{host}:{port}/", plain(f"http://{host}:{port}/{NONCE}-loopback")[0]))
    held = bool(outcomes) and all(status == 403 for _, status in outcomes)
    emit(f"gateway_refuses_{kind}", held, "; ".join(f"{what}: {status}" for what, status in outcomes))


def _sni_outcome(name, tag="sni"):
    try:
        status, sock = tunnel(GIT, SITES["git"]["port"])
        with sock:
            if status != 200:
                return f"CONNECT {status}"
            with tls(sock, name, verify=False) as conn:
                answer = exchange(
                    conn, request("GET", f"/app/info/refs?n={NONCE}-{tag}", f"{GIT}:{SITES['git']['port']}")
                )
                return f"TLS established; then {answer[0]}"
    except OSError as error:
        return f"closed ({type(error).__name__})"


@probe("sni_naming_another_host_closes_the_tunnel")
def _sni():
    outcomes = {name: _sni_outcome(name) for name in (SITES["files"]["host"], SITES["api"]["host"], "localhost")}
    # The control: the same tunnel asking for its own host gets through (the git server answers 401).
    control = _sni_outcome(GIT, "control")
    held = all(outcome.startswith("closed") for outcome in outcomes.values()) and control.startswith("TLS")
    return held, f"SNI in a tunnel to {GIT}: {outcomes}; asking for {GIT} itself: {control}"


@probe("secret_only_to_a_server_proving_its_host")
def _mitm():
    # The policy lets api.lap-test (a secret's host) be reached on the file server's port: a name that leads to a
    # server that cannot prove it is that host (a spoofed DNS answer). The value must not be sent there.
    site = {"host": SITES["api"]["host"], "port": SITES["files"]["port"]}
    status, answer, error = https(site, f"/hello.txt?n={NONCE}-mitm", [("Authorization", f"Bearer {SECRET_STUB}")])
    return status != 200 and not secrets_in(answer, VALUE), f"{status} {short(answer, 200)} {error}"


@probe("host_of_another_host_refused_in_a_tunnel")
def _host():
    git, files, api = SITES["git"], SITES["files"], SITES["api"]
    own = f"{git['host']}:{git['port']}"
    tag = f"n={NONCE}-host"
    auth = [("Authorization", f"Bearer {SECRET_STUB}")]
    tries = {
        "Host: files": https(git, f"/app/info/refs?{tag}", auth, host=f"{files['host']}:{files['port']}"),
        "Host: api (bound too)": https(git, f"/app/info/refs?{tag}", auth, host=f"{api['host']}:{api['port']}"),
        "Host: postgres": https(git, f"/app/info/refs?{tag}", auth, host="127.0.0.1:5432"),
        "Host: own host, other port": https(git, f"/app/info/refs?{tag}", auth, host=f"{git['host']}:{REC}"),
        "target http://files": https(git, f"http://{files['host']}:{files['port']}/hello.txt?{tag}", auth, host=own),
        "target https://files": https(git, f"https://{files['host']}:{files['port']}/hello.txt?{tag}", auth, host=own),
        "plain HTTP, Host: files": plain(
            f"{SITES['plain']['url']}/?{tag}", auth, host=f"{files['host']}:{files['port']}"
        ),
    }
    outcomes = {what: status for what, (status, _, _) in tries.items()}
    return all(status in (400, 403, 421) for status in outcomes.values()), str(outcomes)


@probe("vault_socket_refuses_egress_without_identity")
def _vault():
    sockets = [path for path in unix_sockets() if path.startswith("/run/lap-vault")]
    session, generation = PARAMS["session_id"], STUB.split(".")[2] if STUB.count(".") == 3 else "1"
    forged_mac = base64.urlsafe_b64encode(hashlib.sha256(NONCE.encode()).digest()[:24]).decode().rstrip("=")
    preambles = {
        "none": b"",
        "no identity": b"LAP-SANDBOX egress\r\n",
        "garbage": b"LAP-SANDBOX garbage egress\r\n",
        "forged mac": f"LAP-SANDBOX lapid.{session}.{generation}.{forged_mac} egress\r\n".encode(),
        "the stub key": f"LAP-SANDBOX {STUB} egress\r\n".encode(),
        "the stub key's mac": f"LAP-SANDBOX lapid.{STUB.partition('.')[2]} egress\r\n".encode(),
        "the secret's stub": f"LAP-SANDBOX {SECRET_STUB} egress\r\n".encode(),
    }
    url = f"{SITES['plain']['url']}/?n={NONCE}-vault"
    outcomes = {
        f"{path} {what}": plain(url, address=path, preamble=preamble)[0]
        for path in sockets
        for what, preamble in preambles.items()
    }
    held = bool(sockets) and all(status == 403 for status in outcomes.values())
    return held, str(outcomes) if sockets else "no vault socket visible"


@probe("proxy_env_points_at_the_gateway")
def _proxy_env():
    wrong = []
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
    ):
        if os.environ.get(name) != PROXY_URL:
            wrong.append(f"{name}={os.environ.get(name)}")
    for name in ("NO_PROXY", "no_proxy"):
        if "127.0.0.1" not in os.environ.get(name, "").split(","):
            wrong.append(f"{name}={os.environ.get(name)}")
    names = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO")
    names += ("NODE_EXTRA_CA_CERTS", "npm_config_cafile")
    bundles = {os.environ.get(name) for name in names}
    if len(bundles) != 1 or None in bundles:
        wrong.append(f"CA bundle variables: {sorted(map(str, bundles))}")
    pem = (read(os.environ.get("SSL_CERT_FILE", "/nonexistent")) or b"").decode(errors="replace")
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", pem)
    held = {hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest() for block in blocks}
    missing = [label for label, digest in PARAMS["ca_fingerprints"].items() if digest not in held]
    if missing:
        wrong.append(f"the bundle ({len(blocks)} certificates) lacks {missing}")
    return not wrong, "; ".join(wrong) or f"proxy variables set; one CA bundle of {len(blocks)} certificates"


@probe("egress_private_keys_not_in_sandbox")
def _keys():
    if not KEYS:
        return False, "the test described no key"
    files = [f"/proc/{pid}/{kind}" for pid in pids() for kind in ("environ", "cmdline")]
    tops = ["/etc", "/run", "/tmp", "/var", "/home", "/workspace", "/opt", "/root", "/mnt", "/srv"]
    files += [path for top in tops for path in walk(top)]
    found = {f"{label} in {path}" for path in files for label in secrets_in(read(path) or b"", KEYS)}
    data_dir = PARAMS["data_dir"]
    reachable = [p for p in (f"{data_dir}/run/egress", f"{data_dir}/secrets/egress-ca.key") if os.path.exists(p)]
    held = not found and not reachable
    return held, f"{sorted(found)} {reachable}" if not held else f"{len(files)} places, no key of the gateway's"
