"""`SandboxClient`: the platform's async client of the `lap_sandboxd` daemon in a sandbox.

The wire types live in `lap_sandboxd.protocol`, shared with the daemon. Imports only that,
LAP's errors, msgspec, httpx and anyio.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
import msgspec
from anyio.abc import AsyncResource

from lap_core._errors import SandboxdError
from lap_sandboxd.protocol import (
    ErrorBody,
    ExecRequest,
    ExecResult,
    Health,
    HydrateRequest,
    NewToken,
    OutputRecord,
    ProcessInfo,
    Signal,
    SignalName,
    StartProcess,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator

__all__ = ["SandboxClient", "SandboxdError"]

_T = TypeVar("_T")
_DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Extra time an exec's request gets beyond the command's own timeout (sandboxd kills it first).
_EXEC_SLACK = 30.0
_POLL_SECONDS = 0.05
_decode_record = msgspec.json.Decoder(OutputRecord).decode


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _error(response: httpx.Response) -> SandboxdError:
    try:
        message = msgspec.json.decode(response.content, type=ErrorBody).error
    except msgspec.DecodeError:
        message = response.text[:500] or response.reason_phrase
    return SandboxdError(response.status_code, message)


class SandboxClient(AsyncResource):
    """An async client of one sandbox's sandboxd, over its unix socket or over TCP.

    Use it as an async context manager, or call `aclose()` when done.

    Args:
        token: sandboxd's bearer token.
        uds: Path of sandboxd's unix socket.
        base_url: sandboxd's URL when it listens on TCP (e.g. `http://10.0.0.7:7000`).

    Raises:
        ValueError: Neither or both of `uds` and `base_url` were given.
    """

    def __init__(self, *, token: str, uds: str | None = None, base_url: str | None = None) -> None:
        if (uds is None) == (base_url is None):
            raise ValueError("give exactly one of uds and base_url")
        # One TLS context for every client: building one loads the CA bundle (~20 ms), and a turn
        # makes several clients. trust_env=False: sandboxd is never reached through a proxy.
        transport = httpx.AsyncHTTPTransport(uds=uds, verify=_tls_context())
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=base_url or "http://sandboxd",
            headers={"Authorization": f"Bearer {token}"},
            timeout=_DEFAULT_TIMEOUT,
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, kind: type[_T], body: object = None, **kwargs: Any) -> _T:
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(method, path, content=content, headers=headers, **kwargs)
        except httpx.TransportError as error:
            raise SandboxdError(0, f"cannot reach sandboxd: {type(error).__name__}: {error}") from error
        if response.status_code != 200:
            raise _error(response)
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as error:
            raise SandboxdError(response.status_code, f"unexpected answer from sandboxd: {error}") from error

    async def health(self) -> Health:
        """Return sandboxd's health (the only call that needs no token)."""
        return await self._call("GET", "/healthz", Health)

    async def wait_healthy(self, timeout: float) -> Health:
        """Poll `/healthz` until sandboxd answers.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            SandboxdError: sandboxd did not answer within `timeout` (status 0, with the last error).
        """
        deadline = anyio.current_time() + timeout
        last: Exception | None = None
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise SandboxdError(0, f"sandboxd did not answer within {timeout:g} s: {last}")
            try:
                return await self._call("GET", "/healthz", Health, timeout=min(remaining, 5.0))
            except SandboxdError as error:
                last = error
            await anyio.sleep(min(_POLL_SECONDS, max(0.0, deadline - anyio.current_time())))

    async def replace_token(self, token: str) -> None:
        """Make `token` sandboxd's only token (and this client's); the old one stops working."""
        await self._call("PUT", "/token", dict, NewToken(token=token))
        self._http.headers["Authorization"] = f"Bearer {token}"

    async def hydrate(self, req: HydrateRequest) -> None:
        """Write the request's files and set its env and workdir for every later exec and process."""
        await self._call("POST", "/hydrate", dict, req, timeout=httpx.Timeout(120.0, connect=5.0))

    async def exec(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout: float = 60.0,
    ) -> ExecResult:
        """Run a command to completion and return its exit code and output.

        Args:
            argv: The command line.
            env: Variables added to the sandbox's (hydrated) environment.
            cwd: Working directory; the hydrated workdir by default.
            stdin: Text fed to the command's stdin (empty stdin by default).
            timeout: Seconds after which sandboxd kills the command's process group.

        Returns:
            The result; `timed_out` tells whether the timeout killed it.
        """
        req = ExecRequest(argv=argv, env=env or {}, cwd=cwd, stdin=stdin, timeout=timeout)
        http_timeout = httpx.Timeout(timeout + _EXEC_SLACK, connect=5.0)
        return await self._call("POST", "/exec", ExecResult, req, timeout=http_timeout)

    async def start_process(self, req: StartProcess) -> ProcessInfo:
        """Start a long-running process; if one with the same id exists, return it instead."""
        return await self._call("POST", "/processes", ProcessInfo, req)

    async def process(self, process_id: str) -> ProcessInfo:
        """Return the state of a process (SandboxdError with status 404 if unknown)."""
        return await self._call("GET", f"/processes/{process_id}", ProcessInfo)

    async def signal(self, process_id: str, sig: SignalName) -> ProcessInfo:
        """Send `sig` ("TERM", "INT" or "KILL") to the process's whole process group."""
        return await self._call("POST", f"/processes/{process_id}/signal", ProcessInfo, Signal(signal=sig))

    async def output(self, process_id: str, after: int = 0, follow: bool = True) -> AsyncIterator[OutputRecord]:
        """Yield the process's output records with seq > `after`.

        Args:
            process_id: The process's id.
            after: The last seq already seen (0 for everything).
            follow: Keep yielding new records until the exit record (else stop at what exists).

        Yields:
            The records in seq order; when following, the last one has `stream == "exit"`.

        Raises:
            SandboxdError: The process is unknown, or the stream broke off.
        """
        params = {"after": str(after), "follow": "1" if follow else "0"}
        # While following, a quiet process may print nothing for a long time.
        timeout = httpx.Timeout(None, connect=5.0) if follow else _DEFAULT_TIMEOUT
        try:
            async with self._http.stream(
                "GET", f"/processes/{process_id}/output", params=params, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error(response)
                async for line in response.aiter_lines():
                    if line:
                        yield _decode_record(line)
        except httpx.TransportError as error:
            raise SandboxdError(0, f"output of {process_id} broke off: {type(error).__name__}: {error}") from error
        except msgspec.DecodeError as error:
            raise SandboxdError(200, f"unexpected output record from sandboxd: {error}") from error
