"""Probes of what held before the fixes: the environment, /proc, mounts, host files and the network."""

import os
import socket
import threading

from kit import PARAMS, pids, probe, read, scan, secrets_in, walk

DATA_DIR = PARAMS["data_dir"]


def _described(found):
    return ", ".join(f"{label} in {path}" for label, path in sorted(found.items()))


@probe("env_holds_no_secret")
def _env():
    data = "\0".join(f"{name}={value}" for name, value in os.environ.items()).encode()
    found = secrets_in(data)
    return not found, f"found {found}" if found else f"{len(os.environ)} variables, no secret"


def _proc_scan(kind):
    found = scan(f"/proc/{pid}/{kind}" for pid in pids())
    readable = sum(read(f"/proc/{pid}/{kind}", 1) is not None for pid in pids())
    return not found, _described(found) or f"{readable} readable /proc/*/{kind}, no secret"


probe("proc_environ_holds_no_secret")(lambda: _proc_scan("environ"))
probe("proc_cmdline_holds_no_secret")(lambda: _proc_scan("cmdline"))
probe("proc_maps_holds_no_secret")(lambda: _proc_scan("maps"))


@probe("proc_1_holds_no_secret")
def _proc_1():
    skip = {"mem", "pagemap", "kpageflags", "clear_refs", "kcore"}
    files = [f"/proc/1/{name}" for name in os.listdir("/proc/1") if name not in skip]
    files = [path for path in files if os.path.isfile(path)]
    found = scan(files)
    return not found, _described(found) or f"{len(files)} files of /proc/1, no secret"


def _mounts():
    """(mount point, root in its source, fs type, options) of each line of mountinfo."""
    mounts = []
    for line in (read("/proc/self/mountinfo") or b"").decode().splitlines():
        fields = line.split()
        separator = fields.index("-")
        mounts.append((fields[4], fields[3], fields[separator + 1], fields[5]))
    return mounts


VOLUME = ("/workspace", "/home/agent", "/run/lap")
PSEUDO = {"proc", "tmpfs", "devtmpfs", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2"}


@probe("mounts_show_only_expected_host_paths")
def _mount_sources():
    session, sandbox = PARAMS["session_id"], PARAMS["sandbox"]
    allowed = (
        "/usr",
        "/etc/",
        f"{DATA_DIR}/volumes/{session}/workspace",
        f"{DATA_DIR}/volumes/{session}/home",
        f"{DATA_DIR}/volumes/{session}/run",
        f"{DATA_DIR}/sandboxes/{sandbox}/",
        f"{DATA_DIR}/run/vault",
        f"{DATA_DIR}/runtime/",
        f"{PARAMS['harness_dir']}/",
    )
    # A volume with a disk limit is a filesystem of its own: its parts show as roots in it, and its
    # device is that of the workspace.
    volume_device = os.stat("/workspace").st_dev
    own = {(point, f"/{part}") for point, part in zip(VOLUME, ("workspace", "home", "run"), strict=True)}
    host = [(point, root) for point, root, fs, _ in _mounts() if fs not in PSEUDO]
    unexpected = [
        f"{root} at {point}"
        for point, root in host
        if not root.startswith(allowed) and not ((point, root) in own and os.stat(point).st_dev == volume_device)
    ]
    return (
        not unexpected,
        f"unexpected host paths: {unexpected}" if unexpected else f"{len(host)} host mounts, all meant",
    )


@probe("writable_host_mounts_are_the_volume")
def _writable():
    # Everything the sandbox may write of the host's is its volume: one filesystem, under its disk limit.
    writable = [point for point, _, fs, options in _mounts() if fs not in PSEUDO and "ro" not in options.split(",")]
    extra = sorted(set(writable) - set(VOLUME))
    devices = {os.stat(path).st_dev for path in VOLUME if os.path.exists(path)}
    ok = not extra and len(devices) == 1
    return ok, f"writable: {writable}, on {len(devices)} device(s)" + (f"; beyond the volume: {extra}" if extra else "")


def _unreachable(paths):
    """Paths that exist and can be read or listed (each should be absent or unreadable)."""
    reachable = []
    for path in paths:
        if os.path.isdir(path):
            try:
                os.listdir(path)
                reachable.append(path)
            except OSError:
                pass
        elif os.path.exists(path) and read(path, 1) is not None:
            reachable.append(path)
    return reachable


def _absent(paths):
    reachable = _unreachable(paths)
    return not reachable, f"readable: {reachable}" if reachable else f"{len(paths)} paths absent or unreadable"


probe("host_system_files_unreachable")(
    lambda: _absent(["/root", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/var/lib", "/var/log", "/boot", "/srv"])
)
probe("lap_data_dir_unreachable")(
    lambda: _absent(
        [
            DATA_DIR,
            f"{DATA_DIR}/secrets",
            f"{DATA_DIR}/secrets/vault.key",
            f"{DATA_DIR}/sandboxes",
            f"{DATA_DIR}/volumes",
            "/run/lap-vault/llm.lock",
            PARAMS["log_dir"],
        ]
    )
)
probe("postgres_data_dir_unreachable")(
    lambda: _absent([PARAMS["pg_data_dir"], "/var/lib/postgresql", "/var/run/postgresql", "/run/postgresql"])
)
probe("other_sessions_files_unreachable")(
    lambda: _absent(
        [f"{DATA_DIR}/volumes/{other}/{part}" for other in PARAMS["other_sessions"] for part in ("workspace", "home")]
        + [f"{DATA_DIR}/sandboxes/{name}" for name in PARAMS["other_sandboxes"]]
    )
)


@probe("readable_files_hold_no_secret")
def _files():
    tops = ["/etc", "/run", "/tmp", "/var", "/home", "/workspace", "/opt/lap/python", "/root", "/mnt", "/srv"]
    files = [path for top in tops for path in walk(top)]
    found = scan(files)
    return not found, _described(found) or f"{len(files)} readable files, no secret"


def _connect_all(targets):
    """{target: outcome} of a TCP connect to each (1 s each, all at once): 'connected' or the error."""
    outcomes = {}

    def attempt(host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family) as sock:
                sock.settimeout(1.0)
                sock.connect((host, port))
                outcomes[f"{host}:{port}"] = "connected"
        except OSError as error:
            outcomes[f"{host}:{port}"] = type(error).__name__

    threads = [threading.Thread(target=attempt, args=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _none_connected(targets):
    outcomes = _connect_all(targets)
    connected = sorted(target for target, outcome in outcomes.items() if outcome == "connected")
    return not connected, f"connected to {connected}" if connected else str(outcomes)


probe("no_route_to_external_hosts")(
    lambda: _none_connected([("1.1.1.1", 443), ("8.8.8.8", 53), ("9.9.9.9", 443), ("2606:4700:4700::1111", 443)])
)
probe("host_loopback_services_unreachable")(
    lambda: _none_connected(
        [("127.0.0.1", port) for port in PARAMS["host_ports"]] + [(PARAMS["echo_host"], PARAMS["echo_port"])]
    )
)


@probe("udp_to_external_dns_fails")
def _udp():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.sendto(
                b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
                ("8.8.8.8", 53),
            )
            sock.recvfrom(512)
            return False, "a DNS answer came back from 8.8.8.8"
    except OSError as error:
        return True, type(error).__name__


@probe("dns_resolution_fails")
def _dns():
    resolved = []
    for name in ("example.com", "pypi.org", "host.docker.internal"):
        try:
            resolved.append((name, socket.getaddrinfo(name, 443)[0][4][0]))
        except OSError:
            pass
    return not resolved, f"resolved {resolved}" if resolved else "no name resolves"


@probe("only_loopback_interface")
def _interfaces():
    lines = (read("/proc/net/dev") or b"").decode().splitlines()[2:]
    names = sorted(line.split(":")[0].strip() for line in lines)
    return names == ["lo"], f"interfaces: {names}"
