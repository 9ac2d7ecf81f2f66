"""Bringing up a session's sandbox: find it, or create it, and hydrate it for the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from lap_core._install import harness_dir, is_installed
from lap_core.errors import HarnessError, SandboxError
from lap_core.events import Status
from lap_core.harness import LLMAccess
from lap_core.sandbox import LLM_BASE_URL, SandboxSpec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from lap_core._vault import StubKeys
    from lap_core.events import SessionEvent
    from lap_core.harness import Harness
    from lap_core.models import Agent, Session
    from lap_core.sandbox import SandboxBackend, SandboxClient

log = structlog.get_logger("lap.engine")


def sandbox_name(session_id: str) -> str:
    """Return the sandbox name of a session: a DNS label, as Kubernetes needs.

    Session ids (`new_id`) are lowercase letters, digits and `_`; a label may not end in `-`, so
    an id ending in `_` gets a `0` more (one character longer than any id: no other id maps there).
    """
    name = "lap-" + session_id.replace("_", "-").lower()
    return name + "0" if name.endswith("-") else name


def sandbox_of(session: Session) -> str:
    """Return the name of the session's sandbox (the one it has, or the one it will get)."""
    return session.sandbox_name or sandbox_name(session.id)


def sandbox_labels(session: Session) -> dict[str, str]:
    """Return the labels every sandbox of a session carries (the reconciler finds them by these)."""
    return {"lap.team": session.team_id, "lap.agent": session.agent_id, "lap.session": session.id}


class SandboxProvider:
    """Gets a session a ready, hydrated sandbox through the selected backend."""

    def __init__(self, backend: SandboxBackend, keys: StubKeys, harness_root: Path, *, start_timeout: float) -> None:
        self._backend = backend
        self._keys = keys
        self._harness_root = harness_root
        self._start_timeout = start_timeout

    async def get(
        self, session: Session, agent: Agent, harness: Harness, emit: Callable[[SessionEvent], Awaitable[None]]
    ) -> SandboxClient:
        """Return a client of the session's sandbox, creating the sandbox if it is missing or dead."""
        name = sandbox_of(session)
        ref = await self._backend.status(name)
        created = False
        if ref is not None and ref.state in ("stopped", "failed"):
            log.info("sandbox.replacing", sandbox=name, state=ref.state, detail=ref.detail)
            await self._backend.delete(name)
            ref = None
        if ref is None:
            # A backend that runs sandboxes from per-harness images has the CLI in the image.
            local_files = "images" not in self._backend.capabilities
            if local_files and harness.npm_packages and not is_installed(self._harness_root, agent.harness, harness):
                raise HarnessError(
                    f"harness {agent.harness!r} is not installed: run `lap harness install {agent.harness}`"
                )
            if session.native_session_id and not await self._backend.volume_exists(session.id):
                await emit(Status(phase="volume_lost", detail="the workspace and the agent's own session are gone"))
            await emit(Status(phase="sandbox_creating", detail=name))
            spec = SandboxSpec(
                name=name,
                harness=agent.harness,
                volume=session.id,
                labels=sandbox_labels(session),
                harness_root=str(harness_dir(self._harness_root, agent.harness, harness)) if local_files else None,
            )
            await self._backend.create(spec)
            created = True
        try:
            ref = await self._backend.wait_ready(name, timeout=self._start_timeout)
        except SandboxError:
            if created:
                raise
            # It died while we waited for it (it was killed, say): bring up a new one, once.
            log.info("sandbox.replacing", sandbox=name, state="died")
            await self._backend.delete(name)
            return await self.get(session, agent, harness, emit)
        if ref.state != "ready":
            raise SandboxError(f"sandbox {name} is {ref.state}: {ref.detail}")
        client = await self._backend.connect(name)
        try:
            llm = LLMAccess(base_url=LLM_BASE_URL, api_key=self._keys.issue(session.id))
            # Hydrating every turn is cheap and makes a restarted sandboxd whole again.
            await client.hydrate(harness.hydrate(agent, llm))
        except BaseException:
            await client.aclose()
            raise
        if created:
            await emit(Status(phase="sandbox_ready", detail=name))
        return client

    async def replace(
        self, session: Session, agent: Agent, harness: Harness, emit: Callable[[SessionEvent], Awaitable[None]]
    ) -> None:
        """Delete the session's sandbox and bring up a fresh one: same workspace and harness home."""
        name = sandbox_of(session)
        await emit(Status(phase="sandbox_deleting", detail=name))
        await self._backend.delete(name)
        client = await self.get(session, agent, harness, emit)
        await client.aclose()

    async def suspend_if_idle(self, session: Session) -> bool:
        """Delete the session's sandbox (its volume stays) unless a process still runs in it."""
        name = sandbox_of(session)
        ref = await self._backend.status(name)
        if ref is not None and ref.state == "ready":
            async with await self._backend.connect(name) as client:
                if (await client.health()).processes:
                    return False
        await self._backend.delete(name)
        return True
