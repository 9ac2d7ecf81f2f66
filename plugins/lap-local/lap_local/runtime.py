"""What sandboxd runs on in a local sandbox: a copy of `lap_sandboxd` and msgspec in the data directory
(`<data>/runtime/<digest>/`, mounted read-only at /opt/lap/python), the sandbox's user reading nothing
else of LAP's, compiled by the sandbox's own Python."""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

import msgspec
import structlog

import lap_sandboxd

log = structlog.get_logger("lap.local")
SOURCES = (Path(lap_sandboxd.__file__).parent, Path(msgspec.__file__).parent)


class Runtime:
    """sandboxd's files under `root` (`<data>/runtime`), for the sandbox's Python `python`."""

    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self._lock = threading.Lock()  # a burst of first sandboxes makes (and compiles) one copy, not one each

    @functools.cached_property
    def version(self) -> str:
        """A digest of sandboxd's and msgspec's files and of the Python compiling them: once per process."""
        digest = hashlib.sha256(self.python.encode())
        for source in SOURCES:
            for file in sorted(source.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    digest.update(str(file.relative_to(source.parent)).encode() + file.read_bytes())
        return digest.hexdigest()[:12]

    def path(self) -> Path:
        """Return the copy of this version, made (and compiled) first if it is not there.

        The sandbox's Python compiles it (its `.pyc` are what it looks for): sandboxd runs with -B on a
        read-only mount, so it would otherwise compile every module at every start.
        """
        target = self.root / self.version
        with self._lock:
            if not target.exists():
                self._make(target)
        return target

    def _make(self, target: Path) -> None:
        staging = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
        for source in SOURCES:
            shutil.copytree(source, staging / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        self._compile(staging)
        try:
            staging.rename(target)
        except OSError:  # another LAP process put the same copy there first
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():
                raise

    def _compile(self, directory: Path) -> None:
        try:
            compiled = subprocess.run(
                [self.python, "-I", "-S", "-m", "compileall", "-q", str(directory)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
            problem = compiled.stdout[-2000:].decode(errors="replace") if compiled.returncode else ""
        except OSError as error:
            problem = str(error)
        if problem:  # sandboxd still runs (or says why not), only slower to start
            log.warning("sandbox.runtime_not_compiled", python=self.python, problem=problem)
