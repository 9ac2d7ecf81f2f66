"""Where a process's LLM proxy listens: its own socket, the shared one, and maybe TCP.

Every LAP process that runs turns serves its own unix socket, which the sandboxes of the turns
it runs prefer: a process that dies takes only its own turns' model streams with it. One process
at a time also serves the directory's shared socket, every sandbox's fallback (an flock decides;
when that process ends, another takes over within `TAKEOVER_POLL`). For sandboxes on other
machines the proxy also listens on TCP.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.streams.stapled import MultiListener

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from anyio.abc import Listener, SocketStream, TaskStatus

log = structlog.get_logger("lap.vault")

TAKEOVER_POLL = 0.5
"""Seconds between attempts to take the shared socket over from another process."""


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _remove(path: Path) -> None:
    # One metadata operation on a local directory: not worth a thread.
    path.unlink(missing_ok=True)


def _owner_alive(path: Path) -> bool | None:
    """Whether the process a socket is named after (`<pid>-<token>.sock`) runs; None: not such a name."""
    pid, dash, _ = path.stem.partition("-")
    if not dash or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_sockets(directory: Path, keep: set[Path]) -> None:
    """Remove the sockets in `directory` left by processes that died.

    A process's own socket is named after its pid: it is stale once that process is gone, and
    never before (another process may have bound it a moment ago and not listen yet: refusing a
    connection then does not make it stale). Other sockets are stale when nobody listens.
    """
    for path in directory.glob("*.sock"):
        if path in keep:
            continue
        alive = _owner_alive(path)
        if alive is not None:
            if not alive:
                path.unlink(missing_ok=True)
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass


async def _serve(listener: MultiListener[Any], handler: Callable[[SocketStream], Awaitable[None]]) -> None:
    try:
        await listener.serve(handler)
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


async def _serve_shared(shared: Path, handler: Callable[[SocketStream], Awaitable[None]]) -> None:
    lock = os.open(shared.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _try_lock(lock):
            log.info("vault.waiting", socket=str(shared), reason="another LAP process serves it")
            while not _try_lock(lock):  # noqa: ASYNC110 - flock has no async wake-up
                await anyio.sleep(TAKEOVER_POLL)
        _remove(shared)
        # 0666: sandboxes run as another user; their identity and stub, not the mode, are the gate.
        listener = await anyio.create_unix_listener(shared, mode=0o666)
        log.info("vault.serving_shared", socket=str(shared))
        await _serve(MultiListener([listener]), handler)
    finally:
        os.close(lock)  # releases the flock: a waiting process takes over


async def serve_sockets(
    handler: Callable[[SocketStream], Awaitable[None]],
    *,
    shared: Path,
    own: Path | None,
    listen: tuple[str, int] | None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections with `handler` until cancelled: `own` and `listen` at once, `shared` when free."""
    shared.parent.mkdir(parents=True, exist_ok=True)
    listeners: list[Listener[Any]] = []
    try:
        if own is not None:
            await anyio.to_thread.run_sync(remove_stale_sockets, shared.parent, {shared, own})
            _remove(own)
            listeners.append(await anyio.create_unix_listener(own, mode=0o666))
        if listen is not None:
            host, port = listen
            listeners.append(await anyio.create_tcp_listener(local_host=host, local_port=port))
        async with anyio.create_task_group() as tasks:
            if listeners:
                tasks.start_soon(_serve, MultiListener(listeners), handler)
            log.info("vault.listening", socket=str(own), tcp=listen)
            task_status.started()
            await _serve_shared(shared, handler)
    finally:
        if own is not None:
            _remove(own)
