"""Cloning a session's repository into its workspace when its first sandbox comes up.

The clone runs inside the sandbox (`git clone --progress`), through the egress gateway like every
other connection of the sandbox: the agent's egress policy must allow the repository's host, and a
token secret bound to that host makes a private repository work (git gets the secret's stub as its
password; the gateway swaps in the value on the way to the host). Progress shows as `status` events
(`repo_cloning`), throttled. A marker in the harness home records the clone, so a sandbox made
again (restart, resume, a lost pod) never clones again. A clone that fails raises `HarnessError`
with git's own words.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from typing import TYPE_CHECKING

from lap_core._errors import HarnessError
from lap_core._events import Status
from lap_core._sandbox import HOME_DIR, WORKSPACE_DIR, StartProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lap_core._events import SessionEvent
    from lap_core._sandbox import SandboxClient

MARKER = f"{HOME_DIR}/.lap/checkout.json"
PROGRESS_EVERY = 1.0
"""Seconds between two progress events of a clone."""


async def checkout(
    client: SandboxClient,
    repo_url: str,
    branch: str | None,
    emit: Callable[[SessionEvent], Awaitable[None]],
    *,
    token_variable: str | None = None,
) -> bool:
    """Clone `repo_url` into the workspace unless it was cloned before; return whether it cloned now.

    `token_variable` names the sandbox variable holding the stub of a token for the repository's
    host (git sends it as the password of `x-access-token`).
    """
    look = 'test -f "$1" && echo marked; ls -A "$2" | head -1'
    present = await client.exec(["sh", "-c", look, "sh", MARKER, WORKSPACE_DIR])
    lines = present.stdout.split()
    if "marked" in lines:
        return False
    if lines:
        await emit(Status(phase="repo_skipped", detail=f"the workspace is not empty: {repo_url} was not cloned"))
        await _mark(client, repo_url, branch, cloned=False)
        return False
    await emit(Status(phase="repo_cloning", detail=repo_url))
    argv = ["git", "-c", "advice.detachedHead=false"]
    if token_variable:
        helper = f'!f() {{ echo username=x-access-token; echo "password=${token_variable}"; }}; f'
        argv += ["-c", f"credential.helper={helper}"]
    argv += ["clone", "--progress", *(["--branch", branch] if branch else []), "--", repo_url, WORKSPACE_DIR]
    process = f"lap-checkout-{secrets.token_hex(4)}"
    await client.start_process(StartProcess(id=process, argv=argv, cwd=HOME_DIR, env={"GIT_TERMINAL_PROMPT": "0"}))
    said, last, tail = 0.0, "", list[str]()
    code = -1
    async for record in client.output(process):
        if record.stream == "exit":
            code = int(record.data)
            break
        for part in filter(None, (p.strip() for p in record.data.split("\r"))):
            tail = [*tail[-9:], part]
            last = part
            if time.monotonic() - said >= PROGRESS_EVERY:
                said = time.monotonic()
                await emit(Status(phase="repo_cloning", detail=part[:200]))
    if code != 0:
        reason = " | ".join(line for line in tail if not line.startswith(("Cloning into", "remote:")))[-1000:]
        raise HarnessError(f"cloning {repo_url} failed (git exited with {code}): {reason or last}")
    await _mark(client, repo_url, branch, cloned=True)
    await emit(Status(phase="repo_cloned", detail=repo_url))
    return True


async def _mark(client: SandboxClient, repo_url: str, branch: str | None, *, cloned: bool) -> None:
    marker = json.dumps({"repo_url": repo_url, "branch": branch, "cloned": cloned})
    script = f'mkdir -p "$(dirname "$1")" && printf %s {shlex.quote(marker)} > "$1"'
    result = await client.exec(["sh", "-c", script, "sh", MARKER])
    if result.exit_code != 0:
        raise HarnessError(f"cannot record the checkout: {result.stderr.strip()}")
