"""The client's tests run against the real `lap serve` (a subprocess, on the shared process backend and the
scripted harness of tests/fakes), one server per test module; each test makes agents of its own names."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures import unmount_under
from tests.server.process import ServeProcess, serve_process

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real `lap serve` for the module's tests (its master key is `server.master_key`)."""
    data_dir = Path(tempfile.mkdtemp(prefix="lap-client-test-", dir="/tmp"))
    data_dir.chmod(0o711)  # sandbox users traverse it
    try:
        with serve_process(data_dir, tmp_path_factory.mktemp("serve"), master_key=secrets.token_urlsafe(16)) as running:
            yield running
    finally:
        unmount_under(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def name() -> str:
    """A name no other test uses (agents and teams are named uniquely per server)."""
    return f"t-{secrets.token_hex(4)}"
