"""The network outside the sandboxes, for the leak suite's egress probes.

The test internet (tests/fakes/internet.py) on host loopback, under names the gateways' resolvers pin there: a git
server whose private repository needs the team secret's value as its password (`git.lap-test`), a file server
(`files.lap-test`, allowed but not bound to the secret), and an echo service bound to the secret (`api.lap-test`,
as `api.github.com` is to a GitHub token) over HTTPS and over plain HTTP. A recording port on host loopback
(127.0.0.1 and ::1) stands for the host's own services, and `loop.wild.lap-test` resolves to it: a name that team A's
policy allows only through a wildcard.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import TYPE_CHECKING, Any

from tests.fakes.internet import Internet
from tests.security.recorders import PortRecorder

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakes.internet import Site

SECRET_NAME = "GITHUB_TOKEN"
WILDCARD = "*.wild.lap-test"
LOOPBACK_NAME = "loop.wild.lap-test"
README = "private code of team A\n"


class World:
    """The test internet, the recording loopback port and the team secret's value."""

    def __init__(self, directory: Path) -> None:
        self.token = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
        self.internet = Internet(directory)
        self.git = self.internet.git("git.lap-test", {"app": {"README.md": README}}, tokens={"app": self.token})
        self.files = self.internet.files("files.lap-test", {"/hello.txt": b"hello from the file server\n"})
        self.api = self.internet.echo("api.lap-test")
        self.plain = self.internet.echo("api.lap-test", tls=False)
        self.loopback = PortRecorder()

    @property
    def sites(self) -> dict[str, Site]:
        return {"git": self.git, "files": self.files, "api": self.api, "plain": self.plain}

    def env(self) -> dict[str, str]:
        """What both `lap serve` processes need to reach and trust the sites."""
        env = self.internet.env()
        env["LAP_EGRESS_HOSTS"] += f",{LOOPBACK_NAME}=127.0.0.1"
        return env

    def policy(self) -> dict[str, Any]:
        """Team A's agent's egress policy: each site on its own port, a wildcard, and the API's name on the file
        server's port (a name that leads to a server which cannot prove it is that host, as a spoofed DNS answer
        would)."""
        allow = [f"{site.name}:{site.port}" for site in self.sites.values()]
        return {"allow": [*allow, WILDCARD, f"{self.api.name}:{self.files.port}"]}

    def secret(self) -> dict[str, Any]:
        """The team secret as `POST /api/secrets` takes it: bound to the git host and its API."""
        return {"name": SECRET_NAME, "value": self.token, "hosts": [self.git.name, self.api.name]}

    def params(self) -> dict[str, Any]:
        """What the egress probes need to know (nothing secret)."""
        sites = {key: {"host": site.name, "port": site.port, "url": site.url} for key, site in self.sites.items()}
        return {
            "secret_name": SECRET_NAME,
            "sites": sites,
            "readme": README,
            "loopback_port": self.loopback.port,
            "loopback_name": LOOPBACK_NAME,
        }

    def requests_with(self, fragment: str) -> dict[str, list[dict[str, Any]]]:
        """The requests each site received that hold `fragment` (in the target or a header)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for key, site in self.sites.items():
            hits = [request for request in site.requests if fragment in json.dumps(request)]
            if hits:
                found[key] = hits
        return found

    def close(self) -> None:
        self.internet.stop()
        self.loopback.close()
