"""The egress gateway's cost: latency added to an HTTPS request, and a large download's throughput.

Run: `.venv/bin/python bench/egress.py [--requests N] [--megabytes M]`. Four processes, as in a
deployment: an HTTPS server on loopback (tests/fakes/internet.py, a CA of its own), the gateway (a
LAP process's vault: `LLMProxy` with its `EgressGateway`, this file run with `--gateway`), the
sandbox's sandboxd forwarding 127.0.0.1:PORT to it (identity and service `egress`), and `curl` as
the client (its own `time_total` and `speed_download`, so process start-up counts nowhere).
Direct requests (`--resolve` to the server) and requests through the gateway alternate, each on a
new connection (CONNECT, then TLS to the server), in three modes: direct, a tunnel (a session
without secrets) and terminated TLS (a session with secrets: the gateway's CA signs the host).
Goals: p50 overhead <= 2 ms per request; a download through the gateway >= 80 % of direct.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _gateway(directory: Path, hosts: str, trust: str) -> None:
    """Serve the vault with its egress gateway on `directory/llm.sock` until killed (`--gateway`)."""
    import anyio

    from lap_core import EgressPolicy
    from lap_core._config import CoreSettings
    from lap_core._egress import BoundSecret, EgressScope, build_gateway
    from lap_core._vault import LLMProxy, StubKeys

    keys = StubKeys(b"b" * 32)
    settings = CoreSettings(lap_egress_hosts=hosts, lap_egress_trust=trust)
    secret = BoundSecret(name="TOKEN", stub="lapsec_bench", value="real", hosts=("files.test",))

    async def scope_of(session_id: str) -> EgressScope:
        secrets = (secret,) if session_id == "ses_secret" else ()
        return EgressScope(generation=1, policy=EgressPolicy(allow=["files.test"]), secrets=secrets)

    async def note(session_id: str, event: object) -> None:
        pass

    async def llm_scope(session_id: str) -> None:
        return None

    async def main() -> None:
        gateway, bundle = build_gateway(directory, settings, scope_of=scope_of, note=note)
        (directory / "bundle.pem").write_bytes(bundle)
        proxy = LLMProxy(
            socket_path=directory / "llm.sock",
            upstream="http://127.0.0.1:9",
            api_key="k",
            keys=keys,
            scope_of=llm_scope,
            egress=gateway,
        )
        await proxy.serve()

    anyio.run(main)


def _forwarder(directory: Path, session: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a sandboxd that forwards a loopback port to the gateway as `session`'s sandbox."""
    import anyio

    from lap_core._sandbox_client import SandboxClient
    from lap_core._vault import StubKeys
    from lap_sandboxd.protocol import EgressRoute, HydrateRequest

    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = Path(tempfile.mkdtemp(prefix="bench-sbd-", dir="/tmp"))
    argv = [sys.executable, "-m", "lap_sandboxd", "--socket", str(state / "s.sock"), "--state", str(state)]
    process = subprocess.Popen(
        [*argv, "--egress", f"127.0.0.1:{port}={directory / 'llm.sock'}"],
        env={**os.environ, "LAP_SANDBOXD_TOKEN": "t" * 32},
        stderr=subprocess.DEVNULL,
    )

    async def hydrate() -> None:
        async with SandboxClient(token="t" * 32, uds=str(state / "s.sock")) as client:
            await client.wait_healthy(20)
            identity = StubKeys(b"b" * 32).identity(session, 1)
            route = EgressRoute(identity=identity, service="egress")
            await client.hydrate(HydrateRequest(workdir=str(state), egress={f"127.0.0.1:{port}": route}))

    anyio.run(hydrate)
    return process, port


def _curl(url: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total} %{speed_download} %{http_code} %{time_connect} %{time_appconnect} %{time_starttransfer}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[2] == "200", out
    if os.environ.get("BENCH_DEBUG"):
        print(url, args[-1], out[3:], file=sys.stderr)
    return {"seconds": float(out[0]), "bytes_per_second": float(out[1])}


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--gateway", nargs=3, metavar=("DIR", "HOSTS", "TRUST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gateway:
        _gateway(Path(args.gateway[0]), args.gateway[1], args.gateway[2])
        return

    from tests.fakes.internet import Internet

    work = Path(tempfile.mkdtemp(prefix="bench-egress-", dir="/tmp"))
    internet = Internet(work)
    site = internet.files("files.test", {"/small": b"x" * 1024, "/large": os.urandom(1024 * 1024) * args.megabytes})
    hosts = "files.test=127.0.0.1"
    gateway = subprocess.Popen(
        [sys.executable, __file__, "--gateway", str(work / "lap"), hosts, str(internet.ca_file)],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    processes = [gateway]
    try:
        deadline = time.monotonic() + 30
        while not (work / "lap" / "bundle.pem").exists() or not (work / "lap" / "llm.sock").exists():
            assert time.monotonic() < deadline, "the gateway did not start in time"
            assert gateway.poll() is None, "the gateway exited"
            time.sleep(0.05)
        bundle = str(work / "lap" / "bundle.pem")
        tunnel, tunnel_port = _forwarder(work / "lap", "ses_plain")
        intercept, intercept_port = _forwarder(work / "lap", "ses_secret")
        processes += [tunnel, intercept]
        # The same CA bundle for all (the sandbox's): reading it is part of every client's handshake.
        direct = ["--cacert", bundle, "--resolve", f"files.test:{site.port}:127.0.0.1"]
        modes = {
            "direct": direct,
            "tunnel": ["--cacert", bundle, "-x", f"http://127.0.0.1:{tunnel_port}"],
            "terminated": ["--cacert", bundle, "-x", f"http://127.0.0.1:{intercept_port}"],
        }
        if os.environ.get("BENCH_MODES"):
            modes = {k: v for k, v in modes.items() if k in os.environ["BENCH_MODES"].split(",")}
        for mode in modes.values():  # warm up (the gateway's leaf certificate, connections, caches)
            _curl(f"{site.url}/small", *mode)
        times: dict[str, list[float]] = {name: [] for name in modes}
        for i in range(args.requests):
            order = list(modes.items()) if i % 2 == 0 else list(reversed(modes.items()))
            for name, mode in order:
                times[name].append(_curl(f"{site.url}/small", *mode)["seconds"] * 1000)
        print(f"HTTPS GET of 1 KiB on a new connection, {args.requests} each (ms):")
        for name, values in times.items():
            print(f"  {name:<10} p50 {_percentile(values, 50):6.2f}  p99 {_percentile(values, 99):6.2f}")
        for name in ("tunnel", "terminated"):
            added = [a - b for a, b in zip(times[name], times["direct"], strict=True)]
            print(
                f"  overhead of the gateway ({name}): p50 {statistics.median(added):5.2f} ms, "
                f"p99 {_percentile(added, 99):5.2f} ms"
            )
        speeds: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(3):
            for name, mode in modes.items():
                speeds[name].append(_curl(f"{site.url}/large", *mode)["bytes_per_second"] / 1e6)
        print(f"download of {args.megabytes} MiB (MB/s, best of 3):")
        for name, values in speeds.items():
            ratio = max(values) / max(speeds["direct"])
            print(f"  {name:<10} {max(values):8.1f}  ({ratio:.0%} of direct)")
        print(json.dumps({"p50_ms": {k: _percentile(v, 50) for k, v in times.items()}}))
    finally:
        for process in processes:
            process.kill()
            process.wait()
        internet.stop()


if __name__ == "__main__":
    main()
