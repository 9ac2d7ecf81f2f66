"""sandboxd's tokens in pods: the one the pod starts with, and the one LAP seals it with.

A pod gets sandboxd's token from a Secret through its environment, and every process of the pod
runs as the same user: the agent can read the pod's first process's environment (tini's, PID 1).
So that token only boots sandboxd. The first time a LAP process reaches a pod's sandboxd, it
replaces the token (`PUT /token`) with a fresh one, kept in the Secret under `sealed` for the other
workers and in sandboxd's memory (sandboxd is non-dumpable: the agent cannot read it there). From
then on the boot token opens nothing. A pod that starts again (a recreated pod, a restarted
container) boots with the Secret's token again and is sealed anew on first contact.
"""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING, Any

import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from lap_core import SandboxClient, SandboxdError, SandboxError
from lap_kubernetes.cluster import MERGE_PATCH, api_error
from lap_kubernetes.manifests import TOKEN_KEY

if TYPE_CHECKING:
    from lap_kubernetes.cluster import Cluster

log = structlog.get_logger("lap.kubernetes")

SEALED_KEY = "sealed"
_CHECK = ".lap-token-check"  # a process id nobody starts: 404 means the token was accepted


async def accepted(token: str, url: str) -> bool:
    """Whether sandboxd at `url` takes `token` (a 404 for a process nobody started, not a 401)."""
    async with SandboxClient(token=token, base_url=url) as client:
        try:
            await client.process(_CHECK)
        except SandboxdError as error:
            if error.status in (401, 403):
                return False
            if error.status == 404:
                return True
            raise
    return True


def _value(secret: dict[str, Any], key: str) -> str | None:
    data = secret.get("data") or {}
    return base64.b64decode(data[key]).decode() if key in data else None


class Tokens:
    """The tokens of a backend's sandboxds, sealed on first contact, remembered per pod."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._known: dict[str, tuple[str, str]] = {}  # sandbox -> (pod, token)

    def forget(self, name: str) -> None:
        """Forget what this process knows of a sandbox's token (it is being deleted)."""
        self._known.pop(name, None)

    async def token(self, name: str, secret_name: str, pod: str, url: str) -> str:
        """Return the token sandboxd at `url` takes now, sealing it first if it still has the boot token.

        `pod` tells pods apart (a new pod of the sandbox boots with the boot token again). If no
        token LAP knows is taken (sandboxd is gone, or someone replaced its token), the sealed
        one is returned anyway: the engine then finds it refused, and replaces the sandbox.
        """
        known = self._known.get(name)
        if known is not None and known[0] == pod:
            return known[1]
        cluster = self._cluster
        try:
            secret = cluster.api_client.sanitize_for_serialization(
                await cluster.core.read_namespaced_secret(secret_name, cluster.namespace)
            )
        except ApiException as error:
            raise api_error(error, f"reading the sandboxd token {secret_name}") from error
        boot, sealed = _value(secret, TOKEN_KEY), _value(secret, SEALED_KEY)
        try:
            if sealed is not None and await accepted(sealed, url):
                token = sealed
            elif boot is not None and await accepted(boot, url):
                token = await self._seal(secret_name, boot, url)
            else:
                log.warning("sandbox.token_refused", sandbox=name)
                return sealed or boot or ""
        except SandboxdError as error:
            raise SandboxError(f"cannot reach sandboxd of {name}: {error}") from error
        self._known[name] = (pod, token)
        return token

    async def _seal(self, secret_name: str, boot: str, url: str) -> str:
        token = secrets.token_urlsafe(32)
        async with SandboxClient(token=boot, base_url=url) as client:
            await client.replace_token(token)
        cluster = self._cluster
        patch = {"stringData": {SEALED_KEY: token}}
        try:
            await cluster.core.patch_namespaced_secret(secret_name, cluster.namespace, patch, _content_type=MERGE_PATCH)
        except ApiException as error:
            raise api_error(error, f"keeping the sealed token of {secret_name}") from error
        log.info("sandbox.token_sealed", secret=secret_name)
        return token
