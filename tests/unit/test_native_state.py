"""The copy of a harness's native state taken before a turn, and put back for its start-over (real sandboxd)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from lap_core import Harness, NativeState
from lap_core._native_state import restore_native_state, snapshot_native_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import SandboxClient, Turn
    from tests.unit.sandboxd_daemon import Daemon

pytestmark = pytest.mark.anyio


class _Declared(Harness):
    def __init__(self, state: NativeState | None) -> None:
        self.native_state = state  # type: ignore[misc]

    async def run_turn(self, sandbox: SandboxClient, turn: Turn) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield


def _tree(root: Path) -> dict[str, str]:
    """Every file and symlink under root, with its content or target."""
    return {
        str(path.relative_to(root)): f"-> {path.readlink()}" if path.is_symlink() else path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_symlink() or path.is_file()
    }


@pytest.fixture
def home(daemon: Daemon) -> Path:
    path = daemon.directory / f"home {secrets.token_hex(3)}"  # a space: every path is one argument
    (path / "projects" / "sub").mkdir(parents=True)
    (path / "projects" / "sub" / "session.jsonl").write_text("message 1\n")
    (path / "projects" / "link").symlink_to("/etc/hostname")  # copied as a link, never followed
    (path / "data").mkdir()
    (path / "data" / "state.db").write_text("db")
    (path / "data" / "state.db-wal").write_text("wal")
    (path / "data" / "other.txt").write_text("not declared")
    return path


def _state(home: Path) -> NativeState:
    return NativeState(
        paths=(f"{home}/projects", f"{home}/data/state.db*", f"{home}/absent"),
        snapshot_dir=f"{home}/.lap/native-state",
    )


async def test_a_start_over_gets_the_state_as_it_was_before_the_turn(home: Path, client: SandboxClient) -> None:
    harness = _Declared(_state(home))
    before = _tree(home)
    assert await snapshot_native_state(client, harness, "turn_1")
    # The lost attempt: a message appended, a file added and one removed, a -shm appeared, an
    # absent path created; what is not declared changes too and is left alone.
    with (home / "projects" / "sub" / "session.jsonl").open("a") as file:
        file.write("message 2\n")
    (home / "projects" / "new.jsonl").write_text("half a turn")
    (home / "data" / "state.db-wal").unlink()
    (home / "data" / "state.db-shm").write_text("shm")
    (home / "absent").mkdir()
    (home / "data" / "other.txt").write_text("changed")
    for _ in range(2):  # a second start-over finds the same copy
        assert await restore_native_state(client, harness, "turn_1")
        after = _tree(home)
        assert after.pop("data/other.txt") == "changed"
        assert {k: v for k, v in after.items() if not k.startswith(".lap/")} == {
            k: v for k, v in before.items() if k != "data/other.txt"
        }


async def test_only_a_copy_of_the_same_turn_is_put_back(home: Path, client: SandboxClient) -> None:
    harness = _Declared(_state(home))
    assert not await restore_native_state(client, harness, "turn_1")  # no copy at all
    assert await snapshot_native_state(client, harness, "turn_1")
    (home / "projects" / "sub" / "session.jsonl").write_text("changed")
    assert not await restore_native_state(client, harness, "turn_2")
    assert (home / "projects" / "sub" / "session.jsonl").read_text() == "changed"
    assert await snapshot_native_state(client, harness, "turn_2")  # replaces the copy of turn_1
    assert not await restore_native_state(client, harness, "turn_1")
    assert sorted(p.name for p in (home / ".lap").iterdir()) == ["native-state"]


async def test_a_harness_without_native_state_has_no_copy(home: Path, client: SandboxClient) -> None:
    assert not await snapshot_native_state(client, _Declared(None), "turn_1")
    assert not await restore_native_state(client, _Declared(None), "turn_1")
    assert not (home / ".lap").exists()


async def test_a_copy_that_fails_is_no_copy(home: Path, client: SandboxClient) -> None:
    (home / "ro").mkdir()
    (home / "ro" / "file").write_text("x")
    state = NativeState(paths=(f"{home}/projects",), snapshot_dir=f"{home}/ro/file/snapshot")  # not a directory
    assert not await snapshot_native_state(client, _Declared(state), "turn_1")
    assert not await restore_native_state(client, _Declared(state), "turn_1")


async def test_paths_are_arguments_never_script(home: Path, client: SandboxClient) -> None:
    pwned = home / "pwned"
    state = NativeState(paths=(f"{home}/$(touch {pwned})", f"{home}/`touch {pwned}`;"), snapshot_dir=f"{home}/copy")
    assert await snapshot_native_state(client, _Declared(state), "turn_1")
    assert await restore_native_state(client, _Declared(state), "turn_1")
    assert not pwned.exists()
