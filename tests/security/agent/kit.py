"""What every probe script shares. It runs inside a sandbox, as the agent's own tool call, on the sandbox's Python
(stdlib only): the runner sends this file followed by one group script as one program
(`python3 -c BOOT PROGRAM PARAMS`).

Each probe prints one JSON line `{"probe": name, "held": bool, "detail": str, ...facts}`; the host asserts on them.
Secrets reach the sandbox only as `(head, length, sha256)`, so a probe can find one without ever holding it.
"""

import base64
import glob
import hashlib
import json
import os
import re
import socket
import sys

PARAMS = json.loads(base64.b64decode(sys.argv[2])) if len(sys.argv) > 2 else {}
SECRETS = PARAMS.get("secrets", [])
LOOT = "/workspace/.lap-loot"  # the test's drop box (foreign stubs, this session's stub history): never scanned
PROXY = ("127.0.0.1", 4000)
STUB_VARS = ("LITELLM_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
READ_LIMIT = 4 * 1024 * 1024


def emit(name, held, detail="", **facts):
    """Print one probe's result line."""
    print(json.dumps({"probe": name, "held": bool(held), "detail": str(detail)[:1200], **facts}), flush=True)


def probe(name):
    """Run the decorated function now as probe `name`: it returns (held, detail) or (held, detail, facts)."""

    def run(function):
        try:
            held, detail, *facts = function()
        except Exception as error:  # a probe that crashes has not shown that the boundary held
            held, detail, facts = False, f"probe crashed: {error!r}", []
        emit(name, held, detail, **(facts[0] if facts else {}))
        return function

    return run


def secrets_in(data, known=None):
    """The labels of the known secrets (or of `known`) that occur in `data` (bytes)."""
    found = []
    for secret in SECRETS if known is None else known:
        head, length = secret["head"].encode(), secret["length"]
        start = data.find(head)
        while start != -1:
            if hashlib.sha256(data[start : start + length]).hexdigest() == secret["sha256"]:
                found.append(secret["label"])
                break
            start = data.find(head, start + 1)
    return found


def read(path, limit=READ_LIMIT):
    """The first `limit` bytes of a file, or None if it cannot be read (without following a last symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not os.path.isfile(path) and not path.startswith("/proc/"):
            return None
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def walk(top, limit=20000):
    """Regular files under `top` (symlinks not followed, the loot box and pseudo file systems skipped)."""
    count = 0
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in (LOOT, "/proc", "/sys", "/dev")]
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            count += 1
            if count > limit:
                return
            yield path


def scan(paths):
    """{label: first path} of the known secrets found in the readable ones of `paths`."""
    found = {}
    for path in paths:
        data = read(path)
        if data:
            for label in secrets_in(data):
                found.setdefault(label, path)
    return found


def pids():
    """The pids this sandbox's /proc shows."""
    return sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())


def environ_of(pid):
    """{name: value} of a process's initial environment, or {} if unreadable."""
    data = read(f"/proc/{pid}/environ") or b""
    pairs = (item.partition(b"=") for item in data.split(b"\0") if b"=" in item)
    return {name.decode(errors="replace"): value.decode(errors="replace") for name, _, value in pairs}


STUB_PATTERN = re.compile(r"lapsk\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def own_stubs():
    """The stub keys this sandbox holds: the harness's env (this process's, then every process's) and its config."""
    found = [os.environ[name] for name in STUB_VARS if os.environ.get(name)]
    for pid in pids():
        env = environ_of(pid)
        found += [env[name] for name in STUB_VARS if env.get(name)]
    for path in walk(os.path.expanduser("~"), limit=2000):
        data = read(path, 256 * 1024) or b""
        found += STUB_PATTERN.findall(data.decode(errors="replace"))
    return list(dict.fromkeys(found))


def own_stub():
    """The stub key the harness uses now ('' if none is found)."""
    stubs = own_stubs()
    return stubs[0] if stubs else ""


def remember_own_stub():
    """Append this sandbox's current stub to the loot box (the host learns every stub a session ever had)."""
    stub = own_stub()
    os.makedirs(LOOT, exist_ok=True)
    path = os.path.join(LOOT, "own-stubs")
    known = (read(path) or b"").decode().split()
    if stub and stub not in known:
        with open(path, "a") as file:
            file.write(stub + "\n")
    return stub


SECRET_STUB = re.compile(r"lapsec_[a-z2-7]+")


def remember_secret_stubs():
    """Append the secrets' stubs this sandbox's processes hold to the loot box; return them."""
    values = list(os.environ.values()) + [value for pid in pids() for value in environ_of(pid).values()]
    stubs = list(dict.fromkeys(value for value in values if SECRET_STUB.fullmatch(value)))
    path = os.path.join(LOOT, "own-secret-stubs")
    known = (read(path) or b"").decode().split()
    with open(path, "a") as file:
        file.writelines(stub + "\n" for stub in stubs if stub not in known)
    return stubs


def loot(name, default=None):
    """A JSON file the test dropped into the loot box."""
    data = read(os.path.join(LOOT, name))
    return json.loads(data) if data else default


def dechunk(body):
    """The payload of a chunked HTTP body (as much as arrived)."""
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


def http(method="GET", target="/", headers=(), body=b"", address=PROXY, timeout=8.0, raw=None):
    """Send one request as raw bytes (exactly as given) and read the answer until the server closes.

    Returns (status or None, body, error): status None when no HTTP answer came back.
    """
    if raw is None:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1:4000", *(f"{k}: {v}" for k, v in headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close"]
        raw = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body
    chunks, error = [], ""
    try:
        with socket.socket(socket.AF_UNIX if isinstance(address, str) else socket.AF_INET) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(raw)
            while data := sock.recv(65536):
                chunks.append(data)
    except OSError as failure:
        error = f"{type(failure).__name__}: {failure}"
    response = b"".join(chunks)
    head, _, payload = response.partition(b"\r\n\r\n")
    status = None
    if response.startswith(b"HTTP/1."):
        try:
            status = int(response.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = None
    if b"transfer-encoding: chunked" in head.lower():
        payload = dechunk(payload)
    return status, payload, error


def json_error(body):
    """The error object of a JSON error body `{"error": {"message", "code", ...}}`, or None."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) and "message" in error and "code" in error else None


def short(body, size=160):
    """A printable head of an answer (never the whole)."""
    return body[:size].decode("latin-1").encode("unicode_escape").decode()


def auth_headers(key, how):
    """The headers that present `key`: `how` is 'x-api-key' or 'bearer'."""
    return [("x-api-key", key)] if how == "x-api-key" else [("Authorization", f"Bearer {key}")]


def chat_body(model="fake-model", text="hello", **extra):
    """A small chat completions request."""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra}).encode()


def listening_tcp():
    """(host, port) of every TCP socket listening in this sandbox's network namespace."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in (read(table) or b"").decode().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                if family == socket.AF_INET:
                    host = socket.inet_ntop(family, raw[::-1])
                else:
                    host = socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                found.append((host, int(port, 16)))
    return found


def unix_sockets():
    """Paths of the unix sockets this sandbox can see: /proc/net/unix and any socket file under /run, /tmp, home."""
    found = set()
    for line in (read("/proc/net/unix") or b"").decode(errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith("/"):
            found.add(fields[7])
    for top in ("/run", "/tmp", os.path.expanduser("~"), "/workspace"):
        for path in glob.glob(f"{top}/**", recursive=True):
            try:
                if os.path.exists(path) and (os.lstat(path).st_mode & 0o170000) == 0o140000:
                    found.add(path)
            except OSError:
                continue
    return sorted(found)


def self_check():
    """Show that a probe finds a secret where one is: the session's own marker file, described as secrets are."""
    canary = PARAMS.get("canary")
    if canary:
        found = secrets_in(read("/workspace/lap-marker.txt") or b"", [canary])
        emit("kit_self_check", found == [canary["label"]], f"the marker file's secret found: {found}")


STUB = remember_own_stub()
SECRET_STUBS = remember_secret_stubs()
self_check()
