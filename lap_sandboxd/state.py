"""sandboxd's state: the token, the hydrated env and workdir, the processes."""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lap_sandboxd.egress import parse_target
from lap_sandboxd.processes import ProcessTable

if TYPE_CHECKING:
    from lap_sandboxd.egress import EgressServer
    from lap_sandboxd.protocol import HydrateRequest

__all__ = ["HTTPError", "Sandboxd"]


class HTTPError(Exception):
    """An error answered with `status` and an `ErrorBody`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Sandboxd:
    """The daemon's state: the token, the hydrated env and workdir, the processes."""

    def __init__(self, token: str, state_dir: Path, egress: dict[str, EgressServer] | None = None) -> None:
        self.expected_auth = f"Bearer {token}".encode()
        self.started_at = time.time()
        self.processes = ProcessTable(state_dir)
        self.egress = egress or {}  # by listening address, "HOST:PORT"
        self._lock = threading.Lock()
        self._env: dict[str, str] = {}
        self._workdir: str | None = None

    def child_env(self, extra: dict[str, str]) -> dict[str, str]:
        """Return a child's environment: sandboxd's own, then the hydrated env, then `extra`."""
        with self._lock:
            return {**os.environ, **self._env, **extra}

    def child_cwd(self, cwd: str | None) -> str | None:
        """Return a child's working directory: `cwd`, else the hydrated workdir."""
        with self._lock:
            return cwd or self._workdir

    def hydrate(self, req: HydrateRequest) -> None:
        """Write the files (all decoded before any is written), remember env and workdir, route egress."""
        workdir = Path(req.workdir)
        try:
            contents = [(workdir / f.path, base64.b64decode(f.content_b64, validate=True), f.mode) for f in req.files]
        except binascii.Error as error:
            raise HTTPError(400, f"invalid base64 content: {error}") from error
        routes = []
        for address, route in req.egress.items():
            server = self.egress.get(address)
            if server is None:
                continue  # this sandbox reaches that address some other way (or not at all)
            try:
                targets = [parse_target(target) for target in route.targets]
            except ValueError as error:
                raise HTTPError(400, f"egress of {address}: {error}") from error
            routes.append((server, targets, route.identity, route.service))
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            for path, content, mode in contents:
                _write_file(path, content, mode)
        except OSError as error:
            raise HTTPError(400, f"cannot write files: {error}") from error
        with self._lock:
            self._env = dict(req.env)
            self._workdir = req.workdir
        for server, targets, identity, service in routes:
            server.set_route(targets, identity, service)


def _unchanged(path: Path, content: bytes, mode: int) -> bool:
    # Every turn hydrates the same files (a CA bundle of 200 KB among them): write only what changed.
    try:
        info = path.stat()
        if info.st_size != len(content) or info.st_mode & 0o7777 != mode & 0o7777 or path.is_symlink():
            return False
        return path.read_bytes() == content
    except OSError:
        return False


def _write_file(path: Path, content: bytes, mode: int) -> None:
    if _unchanged(path, content, mode):
        return
    # Write beside and rename, so a reader never sees half a file; set the mode past the umask.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.lap-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(content)
        os.fchmod(file.fileno(), mode & 0o7777)
    tmp.replace(path)
