"""sandboxd's token in a pod: the boot token from the pod's environment is replaced on first contact."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lap_core import SandboxClient
from lap_kubernetes.tokens import SEALED_KEY, Tokens, accepted

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio
BOOT = "boot-token-every-process-of-the-pod-can-read"


class _Core:
    """The two Secret calls `Tokens` makes, on one Secret kept in memory."""

    def __init__(self) -> None:
        self.data = {"token": base64.b64encode(BOOT.encode()).decode()}

    async def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "data": dict(self.data)}

    async def patch_namespaced_secret(self, name: str, namespace: str, patch: dict[str, Any], **_: Any) -> None:
        for key, value in patch["stringData"].items():
            self.data[key] = base64.b64encode(value.encode()).decode()


class _ApiClient:
    @staticmethod
    def sanitize_for_serialization(obj: Any) -> Any:
        return obj


class _Cluster:
    def __init__(self, core: _Core) -> None:
        self.core, self.api_client, self.namespace = core, _ApiClient(), "lap"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _pod() -> Iterator[str]:
    """sandboxd as a pod runs it: the boot token in its environment, its API on TCP."""
    port = _free_port()
    state = Path(tempfile.mkdtemp(prefix="sbd-"))
    argv = [sys.executable, "-m", "lap_sandboxd", "--socket", str(state / "s.sock"), "--state", str(state)]
    process = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "LAP_SANDBOXD_TOKEN": BOOT},
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


async def _ready(url: str) -> None:
    async with SandboxClient(token="x", base_url=url) as client:
        await client.wait_healthy(20)


async def test_the_boot_token_is_replaced_on_first_contact_and_kept_for_other_workers() -> None:
    core = _Core()
    with _pod() as url:
        await _ready(url)
        first = await Tokens(_Cluster(core)).token("s", "s", "pod-1", url)  # type: ignore[arg-type]
        assert first != BOOT
        assert await accepted(first, url)
        assert not await accepted(BOOT, url)  # what the agent can read opens nothing now
        assert base64.b64decode(core.data[SEALED_KEY]).decode() == first
        # Another worker finds the sealed token in the Secret.
        assert await Tokens(_Cluster(core)).token("s", "s", "pod-1", url) == first  # type: ignore[arg-type]
    # The pod starts again: its sandboxd boots with the Secret's token and is sealed anew.
    with _pod() as url:
        await _ready(url)
        again = await Tokens(_Cluster(core)).token("s", "s", "pod-2", url)  # type: ignore[arg-type]
        assert again not in (BOOT, first)
        assert await accepted(again, url)


async def test_a_sandboxd_that_takes_no_token_lap_knows_gets_the_sealed_one_and_fails_later() -> None:
    core = _Core()
    core.data["token"] = base64.b64encode(b"not-what-the-pod-has").decode()
    with _pod() as url:
        await _ready(url)
        token = await Tokens(_Cluster(core)).token("s", "s", "pod-1", url)  # type: ignore[arg-type]
        assert not await accepted(token, url)
        with anyio.fail_after(5):
            assert await accepted(BOOT, url)  # untouched: LAP never had its token
