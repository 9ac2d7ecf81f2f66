"""The platform as users run it, for the leak suite.

Two real `lap serve` processes on one PostgreSQL database and data directory, logging at debug level to files: one
as the console renders it (`lap -vv serve`, started first, so its LLM proxy serves the sandboxes), one as JSON lines
(`lap -vv --log-json serve`). The local backend runs real bubblewrap sandboxes as the unprivileged sandbox user; the
gateway is a real LiteLLM proxy in front of the scripted fake LLM, and its key (the real key) is random. Two teams,
each with its own key, agent (Codex) and sessions; team A talks to the console server, team B to the JSON one.
The egress gateways reach the test internet (`world`); team A holds a secret bound to its git host, and its agent's
egress policy allows the test sites; team B's agent has no policy.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from tests.fakes.litellm import LiteLLMProxy, free_port
from tests.fakes.llm_server import FakeLLM
from tests.fixtures import PG_ADMIN, lap_env
from tests.security.recorders import EchoServer, SocketRecorder, wait_until
from tests.security.world import World

LAP = [sys.executable, "-m", "lap_core"]
SESSIONS = {"a1": "a", "a2": "a", "a_deleted": "a", "a_restarted": "a", "a_disk": "a", "b1": "b", "b2": "b"}
"""The sessions (key: team): a1 probes; a2 is symlinked; the others are deleted, restarted, filled, flooded, locked."""
DISK_LIMIT_MIB = 64
TURN_TIMEOUT = 240.0
SERVER_OF_TEAM = {"a": "console", "b": "json"}


@dataclass
class Server:
    """One `lap serve` process and the file its log goes to."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    args: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class SessionInfo:
    """A session of the suite's, and what the suite learned about it."""

    key: str
    team: str
    id: str
    marker: str = ""
    stubs: list[str] = field(default_factory=list)  # every stub key its sandboxes held, oldest first
    secret_stubs: list[str] = field(default_factory=list)  # every secret's stub its sandboxes held, oldest first
    deleted: bool = False


async def _pg(sql: str) -> None:
    connection = await asyncpg.connect(f"{PG_ADMIN}/postgres", timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _pg_data_dir() -> str:
    connection = await asyncpg.connect(f"{PG_ADMIN}/postgres", timeout=5)
    try:
        return str(await connection.fetchval("SHOW data_directory"))
    finally:
        await connection.close()


class Platform:
    """Starts everything, sets up the teams and sessions, and keeps every answer it got for the leak check."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lap-leak-", dir="/tmp"))
        self.root.chmod(0o711)
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(mode=0o711)
        self.logs = self.root / "logs"
        self.logs.mkdir(mode=0o700)
        self.real_key = f"sk-real-{secrets.token_hex(16)}"
        self.master_key = f"lap-master-{secrets.token_hex(16)}"
        self.database = f"lap_leak_{secrets.token_hex(4)}"
        self.team_ids: dict[str, str] = {}
        self.team_keys: dict[str, str] = {}
        self.agent_ids: dict[str, str] = {}
        self.sessions: dict[str, SessionInfo] = {}
        self.servers: dict[str, Server] = {}
        self.answers: list[str] = []  # every API answer's status line and body
        self.sandbox_tokens: set[str] = set()
        self.env: dict[str, str] = {}
        self.pg_data_dir = asyncio.run(_pg_data_dir())
        self.fake = FakeLLM().start()
        self.litellm = LiteLLMProxy(self.fake.url, master_key=self.real_key)
        self.echo = EchoServer()
        self.recorder = SocketRecorder(self.root / "host.sock")
        self.world = World(self.root / "internet")

    # --- processes ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the gateway and both servers; return when both answer /readyz."""
        self.litellm.start()
        asyncio.run(_pg(f"CREATE DATABASE {self.database}"))
        self.env = lap_env(
            self.data_dir,
            DATABASE_URL=f"{PG_ADMIN}/{self.database}",
            LITELLM_API_BASE=self.litellm.url,
            LITELLM_API_KEY=self.real_key,
            MASTER_KEY=self.master_key,
            HOME=os.environ.get("HOME", "/root"),
            LAP_SANDBOX_DISK_MB=str(DISK_LIMIT_MIB),
            LAP_SANDBOX_START_TIMEOUT="20",
            **self.world.env(),
        )
        migrated = subprocess.run([*LAP, "migrate"], env=self.env, capture_output=True, text=True, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        self._serve("console", "-vv", "serve")
        # The first server's LLM proxy serves the sandboxes; the second waits to take over (an flock decides).
        assert wait_until(lambda: "vault.listening" in self.servers["console"].log.read_text(errors="replace"), 30)
        self._serve("json", "-vv", "--log-json", "serve")

    def _serve(self, name: str, *args: str, port: int | None = None) -> None:
        port = port or free_port()
        log = self.logs / f"{name}.log"
        with log.open("ab") as file:
            process = subprocess.Popen(
                [*LAP, *args], env={**self.env, "LAP_PORT": str(port)}, stderr=file, cwd=self.root
            )
        server = Server(name, process, port, log, args)
        self.servers[name] = server

        def ready() -> bool:
            assert process.poll() is None, f"lap serve ({name}) exited:\n{log.read_text(errors='replace')[-3000:]}"
            try:
                return httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(ready, 60), f"lap serve ({name}) was not ready:\n{log.read_text(errors='replace')[-3000:]}"

    def stop_server(self, name: str) -> int:
        """Stop a server as an operator would (SIGTERM); return its exit code."""
        process = self.servers[name].process
        process.terminate()
        return process.wait(60)

    def restart_server(self, name: str) -> None:
        """Start a stopped server again, with its arguments, on its port."""
        server = self.servers[name]
        self._serve(name, *server.args, port=server.port)

    def close(self) -> None:
        """Delete the sessions (as a user would: volumes and all) and what is left of the sandboxes, stop every
        process, drop the database and the files."""
        for session in self.sessions.values():
            if not session.deleted and self.servers.get(SERVER_OF_TEAM[session.team]):
                try:
                    self.api("master", "DELETE", f"/api/sessions/{session.id}", server=SERVER_OF_TEAM[session.team])
                except httpx.HTTPError:
                    pass  # a server that is gone: the sandboxes are deleted below all the same
        for server in self.servers.values():
            if server.process.poll() is None:
                server.process.terminate()
        for server in self.servers.values():
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                server.process.kill()
        try:
            if self.env:
                asyncio.run(delete_sandboxes(self.env))
        finally:
            self.litellm.stop()
            self.fake.stop()
            self.echo.close()
            self.recorder.close()
            self.world.close()
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)

    # --- the API ------------------------------------------------------------------------------------------------

    def key_of(self, who: str | None) -> str | None:
        """The bearer key of `who`: 'master', a team ('a', 'b'), or None (no key)."""
        return self.master_key if who == "master" else self.team_keys.get(who) if who else None

    def api(
        self, who: str | None, method: str, path: str, *, server: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call the API as `who` (on the team's server unless `server` says), recording the answer."""
        base = self.servers[server or SERVER_OF_TEAM.get(who or "", "console")].url
        headers = dict(kwargs.pop("headers", {}))
        key = self.key_of(who)
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")
        response = httpx.request(method, base + path, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)
        self.answers.append(f"{method} {path} -> {response.status_code} {response.text}")
        return response

    def setup(self) -> None:
        """Create the two teams (each with a key and a Codex agent) and the sessions."""
        for team in ("a", "b"):
            created = self.api("master", "POST", "/api/teams", json={"name": f"team-{team}"})
            assert created.status_code == 201, created.text
            self.team_ids[team] = created.json()["id"]
            made = self.api("master", "POST", "/api/keys", json={"name": f"key-{team}", "team_id": self.team_ids[team]})
            assert made.status_code == 201, made.text
            self.team_keys[team] = made.json()["key"]
            agent: dict[str, Any] = {"name": f"agent-{team}", "harness": "codex", "model": "fake-model"}
            if team == "a":
                agent["egress"] = self.world.policy()
            created = self.api(team, "POST", "/api/agents", json=agent)
            assert created.status_code == 201, created.text
            self.agent_ids[team] = created.json()["id"]
        created = self.api("a", "POST", "/api/secrets", json=self.world.secret())
        assert created.status_code == 201, created.text
        for key, team in SESSIONS.items():
            created = self.api(team, "POST", "/api/sessions", json={"agent_id": f"agent-{team}", "title": key})
            assert created.status_code == 201, created.text
            self.sessions[key] = SessionInfo(key=key, team=team, id=created.json()["id"])

    def turn(self, key: str, text: str) -> dict[str, Any]:
        """Send a message to a session and wait for its turn to end; return the finished turn (its events)."""
        session = self.sessions[key]
        answer = self.api(
            session.team, "POST", f"/api/sessions/{session.id}/messages", params={"wait": "true"},
            json={"text": text}, timeout=TURN_TIMEOUT,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        self.collect_tokens()
        return dict(answer.json())

    def history(self, key: str) -> list[dict[str, Any]]:
        """The session's whole event log, through the API."""
        session = self.sessions[key]
        answer = self.api(session.team, "GET", f"/api/sessions/{session.id}/messages")
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    def status(self, key: str) -> str:
        session = self.sessions[key]
        return str(self.api(session.team, "GET", f"/api/sessions/{session.id}").json()["status"])

    def wait_status(self, key: str, wanted: str, timeout: float = 60) -> None:
        """Wait until the session's status is `wanted`."""
        seen: list[str] = []

        def reached() -> bool:
            seen.append(self.status(key))
            return seen[-1] == wanted

        assert wait_until(reached, timeout, 0.25), f"{key} never became {wanted}: {seen[-5:]}"

    # --- what the suite learns ----------------------------------------------------------------------------------

    def sandbox_dir(self, key: str) -> Path:
        from lap_core._engine.sandboxes import sandbox_name

        return self.data_dir / "sandboxes" / sandbox_name(self.sessions[key].id)

    def volume(self, key: str) -> Path:
        return self.data_dir / "volumes" / self.sessions[key].id

    def collect_tokens(self) -> None:
        """Learn the sandboxd token of every sandbox there is now (they are secrets, as the keys are)."""
        for meta in (self.data_dir / "sandboxes").glob("*/meta.json"):
            try:
                self.sandbox_tokens.add(json.loads(meta.read_bytes())["token"])
            except (OSError, ValueError, KeyError):
                continue

    def token_of(self, key: str) -> str:
        """The sandboxd token of the session's current sandbox."""
        return str(json.loads((self.sandbox_dir(key) / "meta.json").read_bytes())["token"])

    def fixed_secrets(self) -> dict[str, str]:
        """The platform's own secrets: the real key, the master key, team keys (and their secret part), the
        gateway's upstream keys."""
        found = {"real_key": self.real_key, "master_key": self.master_key}
        for team, key in self.team_keys.items():
            found[f"team_key_{team}"] = key
            found[f"team_key_{team}_secret"] = key.rsplit("_", 1)[-1]
        found |= {"upstream_key_openai": "sk-upstream-fake", "upstream_key_anthropic": "sk-upstream-ant"}
        return found | {"team_secret": self.world.token} | self.egress_keys()

    def egress_keys(self) -> dict[str, str]:
        """The egress gateway's private keys: its CA's and each process's leaf key, whole and their first line."""
        found = {}
        paths = [self.data_dir / "secrets" / "egress-ca.key", *(self.data_dir / "run" / "egress").glob("*/leaf.key")]
        for i, path in enumerate(sorted(paths)):
            try:
                pem = path.read_text()
            except OSError:
                continue
            found[f"egress_key_{path.name}_{i}"] = pem
            found[f"egress_key_{path.name}_{i}_line"] = pem.splitlines()[1]
        return found

    def foreign_secrets(self, key: str) -> dict[str, str]:
        """What session `key` must never see of the other sessions: their stubs and marker files."""
        found: dict[str, str] = {}
        for other in self.sessions.values():
            if other.key != key:
                found |= {f"stub_of_{other.key}_{i}": stub for i, stub in enumerate(other.stubs)}
                found |= {f"secret_stub_of_{other.key}_{i}": stub for i, stub in enumerate(other.secret_stubs)}
                if other.marker:
                    found[f"marker_of_{other.key}"] = other.marker
        return found

    def log_lines(self) -> list[tuple[str, str]]:
        """(file, line) of every line the servers logged, and every sandbox log still there."""
        files = [*self.logs.glob("*.log"), *(self.data_dir / "sandboxes").glob("*/sandbox.log")]
        return [(path.name, line) for path in files for line in path.read_text(errors="replace").splitlines()]


async def delete_sandboxes(env: dict[str, str]) -> None:
    """Delete every sandbox of the platform (they outlive the servers on purpose)."""
    from lap_core import Lap

    async with Lap(env=env, run_turns=False) as lap:
        for ref in await lap.backend.list():
            await lap.backend.delete(ref.name)
