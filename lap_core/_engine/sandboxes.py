"""Bringing up a session's sandbox: find it, or create it, and hydrate it for the agent."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import msgspec
import structlog

from lap_core._egress import BoundSecret, EgressScope
from lap_core._egress_policy import EgressPolicy, host_matches
from lap_core._engine.checkout import checkout
from lap_core._engine.resume import BringUp
from lap_core._errors import HarnessError, NotFound, SandboxError
from lap_core._events import Error, Status
from lap_core._harness import LLMAccess
from lap_core._install import harness_dir, is_installed
from lap_core._sandbox import CA_BUNDLE, EGRESS_PROXY_URL, LLM_BASE_URL, FileSpec, SandboxSpec
from lap_core._sandbox_client import SandboxdError
from lap_core._vault import LLMScope
from lap_sandboxd.protocol import EgressRoute

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from pathlib import Path

    from lap_core._engine.secrets import Secrets
    from lap_core._events import SessionEvent
    from lap_core._harness import Harness
    from lap_core._models import Agent, Session
    from lap_core._sandbox import HydratePayload, SandboxBackend, SandboxClient
    from lap_core._store import SessionStore
    from lap_core._vault import StubKeys

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


LLM_LISTEN = LLM_BASE_URL.removeprefix("http://")
"""The address in the sandbox whose forwarder leads to the LLM proxy (`HOST:PORT`)."""
EGRESS_LISTEN = EGRESS_PROXY_URL.removeprefix("http://")
"""The address in the sandbox whose forwarder leads to the egress gateway."""


def network_env() -> dict[str, str]:
    """Return the variables that point a sandbox's tools at the egress gateway and its CA bundle.

    The LLM proxy (`LLM_BASE_URL`) is reached directly: it is in `NO_PROXY`.
    """
    proxy, local = EGRESS_PROXY_URL, "127.0.0.1,localhost,::1"
    env = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), proxy)
    env |= {"NO_PROXY": local, "no_proxy": local}
    env |= {"npm_config_proxy": proxy, "npm_config_https_proxy": proxy, "npm_config_cafile": CA_BUNDLE}
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO"):
        env[name] = CA_BUNDLE
    env["NODE_EXTRA_CA_CERTS"] = CA_BUNDLE
    return env


async def llm_scope(store: SessionStore, session_id: str) -> LLMScope | None:
    """Return what a session's stub key may use now (the proxy asks on every request), None if it is gone."""
    try:
        session = await store.get_session(session_id)
        agent = await store.get_agent(session.agent_id)
    except NotFound:
        return None
    return LLMScope(
        generation=session.sandbox_generation, models=(agent.model,), team_id=session.team_id, agent_id=agent.id
    )


async def egress_scope(store: SessionStore, secrets: Secrets, keys: StubKeys, session_id: str) -> EgressScope | None:
    """Return where a session's sandbox may go now and its secrets (the gateway asks on every
    connection), None if the session is gone."""
    try:
        session = await store.get_session(session_id)
        agent = await store.get_agent(session.agent_id)
        team = await store.get_team(session.team_id) if agent.egress is None else None
    except NotFound:
        return None
    generation = session.sandbox_generation
    bound = tuple(
        BoundSecret(
            name=item.secret.name,
            stub=keys.secret_stub(session.id, generation, item.secret.id),
            value=item.value,
            hosts=tuple(item.secret.hosts),
        )
        for item in await secrets.values_for(agent)
    )
    return EgressScope(
        generation=generation,
        policy=agent.egress or (team and team.egress) or EgressPolicy(),
        secrets=bound,
        team_id=session.team_id,
        agent_id=agent.id,
    )


def sandbox_labels(session: Session) -> dict[str, str]:
    """Return the labels every sandbox of a session carries (the reconciler finds them by these)."""
    return {"lap.team": session.team_id, "lap.agent": session.agent_id, "lap.session": session.id}


class SandboxProvider:
    """Gets a session a ready, hydrated sandbox through the selected backend."""

    def __init__(
        self,
        backend: SandboxBackend,
        store: SessionStore,
        keys: StubKeys,
        harness_root: Path,
        *,
        start_timeout: float,
        egress_targets: Sequence[str] = (),
        ca_bundle: bytes | None = None,
        default_repo: str | None = None,
        secrets: Secrets | None = None,
        container_env: Mapping[str, str] | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._keys = keys
        self._harness_root = harness_root
        self._start_timeout = start_timeout
        # This process's own addresses of the LLM proxy, which the sandboxes of its turns prefer.
        self._egress_targets = list(egress_targets)
        # The public CAs and the egress gateway's: what tools in the sandbox trust.
        self._ca_bundle = base64.b64encode(ca_bundle).decode() if ca_bundle is not None else None
        self._default_repo = default_repo  # PREINSTALLED_GITHUB_REPO
        self._secrets = secrets
        # The operator's `CONTAINER_ENV_` variables, prefix stripped (lap_core._sandbox_env).
        self._container_env = dict(container_env or {})

    async def get(
        self,
        session: Session,
        agent: Agent,
        harness: Harness,
        emit: Callable[[SessionEvent], Awaitable[None]],
        *,
        retry: bool = True,
    ) -> tuple[SandboxClient, BringUp]:
        """Return a client of the session's sandbox, creating the sandbox if it is missing or dead,
        and what bringing it up found (a new sandbox, a lost volume).

        A sandbox that exists but does not let LAP in (its sandboxd gone, or answering with another
        token) is replaced, once: a session never stays `ready` on a sandbox LAP cannot drive.
        """
        name = sandbox_of(session)
        ref = await self._backend.status(name)
        created = volume_lost = False
        if ref is not None and ref.state == "suspended":
            # Suspended when it was idle (a backend with the `suspend` capability): the same
            # sandbox and volume, its processes new.
            await emit(Status(phase="sandbox_resuming", detail=name))
            ref = await self._backend.resume(name)
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
                volume_lost = True
                await emit(Status(phase="volume_lost", detail="the workspace and the agent's own session are gone"))
            await emit(Status(phase="sandbox_creating", detail=name))
            spec = SandboxSpec(
                name=name,
                harness=agent.harness,
                volume=session.id,
                labels=sandbox_labels(session),
                harness_root=str(harness_dir(self._harness_root, agent.harness, harness))
                if local_files and harness.npm_packages
                else None,
            )
            # A new sandbox, a new generation: the stub keys of the ones before are revoked.
            session = await self._store.update_session(session.id, sandbox_generation=session.sandbox_generation + 1)
            await self._backend.create(spec)
            created = True
        try:
            ref = await self._backend.wait_ready(name, timeout=self._start_timeout)
        except SandboxError:
            if created or not retry:
                raise
            # It died while we waited for it (it was killed, say): bring up a new one, once.
            log.info("sandbox.replacing", sandbox=name, state="died")
            await self._backend.delete(name)
            return await self.get(session, agent, harness, emit, retry=False)
        if ref.state != "ready":
            raise SandboxError(f"sandbox {name} is {ref.state}: {ref.detail}")
        client = await self._backend.connect(name)
        try:
            await client.hydrate(await self._payload(session, agent, harness))
        except SandboxdError as error:
            await client.aclose()
            if created or not retry or error.status not in (0, 401, 403):
                raise
            # Ready to the backend, yet sandboxd does not let LAP in: it is no use to anyone.
            log.warning("sandbox.replacing", sandbox=name, state="unreachable", error=str(error))
            await self._backend.delete(name)
            return await self.get(session, agent, harness, emit, retry=False)
        except BaseException:
            await client.aclose()
            raise
        if created:
            await emit(Status(phase="sandbox_ready", detail=name))
            repo = agent.repo_url or self._default_repo
            if repo:
                try:
                    await checkout(client, repo, agent.branch, emit, token_variable=await self._token_for(agent, repo))
                except BaseException:
                    # A sandbox without its repository is no use: the next turn starts over.
                    await client.aclose()
                    with anyio.CancelScope(shield=True):
                        await self._backend.delete(name)
                    raise
        return client, BringUp(created=created, volume_lost=volume_lost)

    async def _token_for(self, agent: Agent, repo: str) -> str | None:
        """Return the name of the agent's secret bound to the repository's host (git's password), if any."""
        host = (urlsplit(repo).hostname or "").lower()
        secrets = await self._secrets.for_agent(agent) if self._secrets is not None else []
        return next((s.name for s in secrets if any(host_matches(p, host) for p in s.hosts)), None)

    async def _payload(self, session: Session, agent: Agent, harness: Harness) -> HydratePayload:
        """Return what a sandbox is hydrated with: the harness's config, stub keys, the routes out.

        Its environment is the operator's `CONTAINER_ENV_` variables, then the stubs of the agent's
        secrets (never a value), then the harness's own: each wins over those before it.
        Hydrating every turn is cheap and makes a restarted sandboxd whole again.
        """
        generation = session.sandbox_generation
        llm = LLMAccess(base_url=LLM_BASE_URL, api_key=self._keys.issue(session.id, generation))
        payload = harness.hydrate(agent, llm)
        identity = self._keys.identity(session.id, generation)
        routes = {
            **payload.egress,
            LLM_LISTEN: EgressRoute(targets=self._egress_targets, identity=identity),
            EGRESS_LISTEN: EgressRoute(targets=self._egress_targets, identity=identity, service="egress"),
        }
        secrets = await self._secrets.for_agent(agent) if self._secrets is not None else []
        stubs = {secret.name: self._keys.secret_stub(session.id, generation, secret.id) for secret in secrets}
        env = {**self._container_env, **network_env(), **stubs, **payload.env}
        files = list(payload.files)
        if self._ca_bundle is not None:
            files.append(FileSpec(path=CA_BUNDLE, content_b64=self._ca_bundle, mode=0o644))
        return msgspec.structs.replace(payload, egress=routes, env=env, files=files)

    async def replace(
        self, session: Session, agent: Agent, harness: Harness, emit: Callable[[SessionEvent], Awaitable[None]]
    ) -> None:
        """Delete the session's sandbox and bring up a fresh one: same workspace and harness home."""
        name = sandbox_of(session)
        await emit(Status(phase="sandbox_deleting", detail=name))
        await self._backend.delete(name)
        client, _ = await self.get(session, agent, harness, emit)
        await client.aclose()

    async def disk_problem(self, session_id: str) -> Error | None:
        """Return the `error` event of a session whose volume is full, else None."""
        try:
            usage = await self._backend.disk_usage(session_id)
        except Exception as error:  # a measurement must never fail a turn
            log.warning("sandbox.disk_usage_failed", error=repr(error))
            return None
        if usage is None or not usage.full:
            return None
        mb = 1024 * 1024
        return Error(
            code="disk_full",
            message=f"the session's disk is full: {usage.used // mb} of its {usage.limit // mb} MB limit are used;"
            " delete files in the workspace to go on",
        )

    async def suspend_if_idle(self, session: Session) -> bool:
        """Suspend the session's sandbox unless a process still runs in it: the backend's own suspend
        where it has one (capability `suspend`: Kubernetes' operating mode), else delete it (its
        volume stays either way)."""
        name = sandbox_of(session)
        ref = await self._backend.status(name)
        if ref is not None and ref.state == "ready":
            async with await self._backend.connect(name) as client:
                if (await client.health()).processes:
                    return False
        if "suspend" in self._backend.capabilities and ref is not None and ref.state == "ready":
            await self._backend.suspend(name)
        else:
            await self._backend.delete(name)
        return True
