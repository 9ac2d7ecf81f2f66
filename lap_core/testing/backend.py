"""`BackendConformance`: what every `SandboxBackend` must do, run against real sandboxes.

Subclass it in your backend's tests and name your backend: with the kit's pytest plugin
(`lap_core.testing.pytest_plugin`), the suite runs on the backend of its `lap` fixture, selected
with `LAP_SANDBOX_BACKEND`. Or give a `backend` fixture of your own: an open backend whose
sandboxes can start. The suite creates sandboxes named `conf-<random>` and deletes them.

```python
class TestMyBackend(BackendConformance):
    sandbox_backend = "mine"

    @pytest.fixture
    async def backend(self) -> AsyncIterator[SandboxBackend]: ...  # optional
```
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import pytest

from lap_core._errors import SandboxError
from lap_core._sandbox import HOME_DIR, WORKSPACE_DIR, SandboxSpec
from lap_core.testing._base import Suite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from lap_core._runtime import Lap
    from lap_core._sandbox import SandboxBackend

READY_TIMEOUT = 120.0
"""Seconds a sandbox may take to become ready (a cold pod may pull an image)."""


class BackendConformance(Suite):
    """The sandbox backend conformance suite; a subclass names `sandbox_backend` or provides a `backend` fixture."""

    harness: ClassVar[str] = "none"
    """The `SandboxSpec.harness` the suite's sandboxes get (one the backend can start)."""
    spec_fields: ClassVar[dict[str, Any]] = {}
    """Further `SandboxSpec` fields the backend needs (an image, say)."""

    sandbox_backend: ClassVar[str] = ""
    """The registered name of the backend `lap` runs (`LAP_SANDBOX_BACKEND`); empty: LAP's default."""

    @pytest.fixture
    def lap_env(self, lap_env: dict[str, str]) -> dict[str, str]:
        """The kit's `lap_env`, selecting `sandbox_backend`."""
        return {**lap_env, "LAP_SANDBOX_BACKEND": self.sandbox_backend} if self.sandbox_backend else lap_env

    @pytest.fixture
    def backend(self, lap: Lap) -> SandboxBackend:
        """Return the backend of the kit's `lap` (its proxy runs: sandboxes mount its socket); or override this."""
        return lap.backend

    @pytest.fixture
    async def names(self, backend: SandboxBackend) -> AsyncIterator[list[str]]:
        """Collects the sandboxes and volumes a test made, and deletes them afterwards."""
        made: list[str] = []
        yield made
        for name in made:
            await backend.delete(name)
            if "delete_volume" in backend.capabilities:
                await backend.delete_volume(name)

    def _spec(self, names: list[str], **labels: str) -> SandboxSpec:
        name = f"conf-{secrets.token_hex(4)}"
        names.append(name)
        return SandboxSpec(name=name, harness=self.harness, volume=name, labels=labels, **self.spec_fields)

    async def _up(self, backend: SandboxBackend, spec: SandboxSpec) -> None:
        await backend.create(spec)
        assert (await backend.wait_ready(spec.name, timeout=READY_TIMEOUT)).state == "ready"

    async def _sh(self, backend: SandboxBackend, name: str, script: str) -> str:
        async with await backend.connect(name) as client:
            result = await client.exec(["sh", "-c", script], timeout=60)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    async def test_create_is_idempotent_and_the_sandbox_becomes_ready(
        self, backend: SandboxBackend, names: list[str]
    ) -> None:
        spec = self._spec(names, **{"lap.session": "s1", "lap.team": "t1"})
        await backend.create(spec)
        await backend.create(spec)  # the same name: the same sandbox
        ready = await backend.wait_ready(spec.name, timeout=READY_TIMEOUT)
        assert (ready.name, ready.state) == (spec.name, "ready")
        again = await backend.create(spec)
        assert again.name == spec.name
        assert again.state in ("starting", "ready")
        status = await backend.status(spec.name)
        assert status is not None
        assert (status.state, status.labels) == ("ready", spec.labels)
        assert [ref.name for ref in await backend.list({"lap.session": "s1"}) if ref.name == spec.name] == [spec.name]

    async def test_the_workspace_and_home_outlive_the_sandbox(self, backend: SandboxBackend, names: list[str]) -> None:
        spec = self._spec(names)
        await self._up(backend, spec)
        await self._sh(backend, spec.name, f"echo kept > {WORKSPACE_DIR}/w.txt && echo kept > {HOME_DIR}/h.txt")
        await backend.delete(spec.name)
        assert await backend.status(spec.name) is None
        assert await backend.volume_exists(spec.volume)
        await self._up(backend, spec)
        assert await self._sh(backend, spec.name, f"cat {WORKSPACE_DIR}/w.txt {HOME_DIR}/h.txt") == "kept\nkept\n"

    async def test_volumes_are_apart(self, backend: SandboxBackend, names: list[str]) -> None:
        first, second = self._spec(names), self._spec(names)
        await self._up(backend, first)
        await self._up(backend, second)
        await self._sh(backend, first.name, f"echo mine > {WORKSPACE_DIR}/only-first.txt")
        assert await self._sh(backend, second.name, f"ls -A {WORKSPACE_DIR} | grep -vx lost+found || true") == ""

    async def test_list_filters_by_labels(self, backend: SandboxBackend, names: list[str]) -> None:
        tag = secrets.token_hex(4)
        red, blue = self._spec(names, colour=f"red-{tag}"), self._spec(names, colour=f"blue-{tag}")
        await self._up(backend, red)
        await self._up(backend, blue)
        assert [ref.name for ref in await backend.list({"colour": f"red-{tag}"})] == [red.name]
        everything = {ref.name for ref in await backend.list()}
        assert {red.name, blue.name} <= everything

    async def test_missing_sandboxes(self, backend: SandboxBackend, names: list[str]) -> None:
        missing = f"conf-missing-{secrets.token_hex(4)}"
        assert await backend.status(missing) is None
        await backend.delete(missing)  # not an error
        with pytest.raises(SandboxError):
            await backend.wait_ready(missing, timeout=5)

    async def test_a_deleted_volume_is_gone(self, backend: SandboxBackend, names: list[str]) -> None:
        if "delete_volume" not in backend.capabilities:
            pytest.skip("the backend does not delete volumes (capability delete_volume)")
        spec = self._spec(names)
        await self._up(backend, spec)
        await self._sh(backend, spec.name, f"echo old > {WORKSPACE_DIR}/old.txt")
        await backend.delete(spec.name)
        await backend.delete_volume(spec.volume)
        assert not await backend.volume_exists(spec.volume)
        await self._up(backend, spec)
        assert await self._sh(backend, spec.name, f"ls -A {WORKSPACE_DIR} | grep -vx lost+found || true") == ""

    async def test_a_create_racing_a_delete_of_the_same_name_waits_for_it(
        self, backend: SandboxBackend, names: list[str]
    ) -> None:
        # The engine re-creates a sandbox the moment it sees it die, maybe while the delete that
        # killed it is still cleaning up.
        spec = self._spec(names)
        for _ in range(2):
            await self._up(backend, spec)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(backend.delete, spec.name)
                await anyio.lowlevel.checkpoint()  # the delete has begun
                tasks.start_soon(backend.create, spec)
            assert (await backend.wait_ready(spec.name, timeout=READY_TIMEOUT)).state == "ready"
