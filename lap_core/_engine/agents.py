"""Agents: create, find, list and delete them, with their harness options validated."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, get_args

from msgspec.structs import replace

from lap_core._errors import InvalidInput, NotFound
from lap_core._models import DEFAULT_TEAM_ID, Agent, BusyPolicy, new_id, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lap_core._egress_policy import EgressPolicy
    from lap_core._harness import Harness
    from lap_core._store import SessionStore

MAX_NAME = 64
PAGE = 500  # agents read from the store at once
_REPO = re.compile(r"^https?://[^\s/@]+(?::\d+)?/\S+$")
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")


def repo_problems(repo_url: str | None, branch: str | None) -> dict[str, str]:
    """Return what is wrong with a repository URL and branch (empty: fine)."""
    problems = {}
    if repo_url is not None and not _REPO.match(repo_url):
        problems["repo_url"] = "an http(s) URL of a git repository (credentials go in a secret, not the URL)"
    if branch is not None and not _BRANCH.match(branch):
        problems["branch"] = "a branch name: letters, digits, '.', '_', '/', '-'"
    return problems


class Agents:
    """The agent operations of a running `Lap` (`lap.agents`)."""

    def __init__(self, store: SessionStore, harnesses: Mapping[str, Harness]) -> None:
        self._store = store
        self._harnesses = harnesses

    def _check(
        self,
        name: str,
        harness: str,
        model: str,
        options: dict[str, Any],
        on_busy: str,
        egress: EgressPolicy | None = None,
        repo_url: str | None = None,
        branch: str | None = None,
    ) -> None:
        problems: dict[str, str] = repo_problems(repo_url, branch)
        if egress is not None and (egress_problems := egress.problems()):
            problems["egress"] = "; ".join(egress_problems)
        if on_busy not in get_args(BusyPolicy):
            problems["on_busy"] = f"one of {', '.join(get_args(BusyPolicy))}"
        if not name or len(name) > MAX_NAME or not all(c.isalnum() or c in "-_." for c in name):
            problems["name"] = f"1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        if harness not in self._harnesses:
            known = ", ".join(sorted(self._harnesses)) or "none installed"
            problems["harness"] = f"unknown harness {harness!r} (known: {known})"
        else:
            for key, problem in self._harnesses[harness].validate_options(options).items():
                problems[f"options.{key}"] = problem
        if not model.strip():
            problems["model"] = "must not be empty"
        if problems:
            raise InvalidInput(
                "invalid agent: " + "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())), details=problems
            )

    async def create(
        self,
        name: str,
        *,
        harness: str,
        model: str,
        prompt: str = "",
        options: dict[str, Any] | None = None,
        on_busy: BusyPolicy = "enqueue",
        team_id: str = DEFAULT_TEAM_ID,
        egress: EgressPolicy | None = None,
        repo_url: str | None = None,
        branch: str | None = None,
    ) -> Agent:
        """Create an agent; raise `InvalidInput` (unknown harness, bad options) or `Conflict` (name taken).

        `on_busy` is what a message to one of its busy sessions does by default (see `BusyPolicy`).
        """
        options = dict(options or {})
        self._check(name, harness, model, options, on_busy, egress, repo_url, branch)
        agent = Agent(
            id=new_id("agt"),
            team_id=team_id,
            name=name,
            harness=harness,
            model=model,
            prompt=prompt,
            options=options,
            on_busy=on_busy,
            egress=egress,
            repo_url=repo_url,
            branch=branch,
        )
        return await self._store.create_agent(agent)

    async def get(self, ref: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> Agent:
        """Return an agent by id, or by name within `team_id` (the default team when None); raise `NotFound`.

        With `team_id=None` (an admin) an id finds any team's agent.
        """
        try:
            return await self._store.get_agent(ref, team_id=team_id)
        except NotFound:
            return await self._store.find_agent(ref, team_id=team_id or DEFAULT_TEAM_ID)

    async def list(
        self,
        *,
        team_id: str | None = DEFAULT_TEAM_ID,
        search: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Agent]:
        """Return the team's agents (every team's with `team_id=None`), by name: all of them, or a page
        of `limit` from `offset`."""
        if limit is not None:
            return await self._store.list_agents(team_id=team_id, search=search, limit=limit, offset=offset)
        found: list[Agent] = []
        while page := await self._store.list_agents(team_id=team_id, search=search, limit=PAGE, offset=offset):
            found += page
            offset += len(page)
            if len(page) < PAGE:
                break
        return found

    async def update(self, agent: Agent) -> Agent:
        """Store changes to an agent, validated like `create`."""
        self._check(
            agent.name,
            agent.harness,
            agent.model,
            agent.options,
            agent.on_busy,
            agent.egress,
            agent.repo_url,
            agent.branch,
        )
        return await self._store.update_agent(replace(agent, updated_at=utcnow()))

    async def delete(self, ref: str, *, team_id: str | None = DEFAULT_TEAM_ID) -> None:
        """Delete an agent (by id or name); raise `Conflict` while it has sessions."""
        agent = await self.get(ref, team_id=team_id)
        await self._store.delete_agent(agent.id, team_id=agent.team_id)
