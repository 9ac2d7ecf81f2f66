"""Reaching sandboxd from outside the cluster: local TCP ports tunnelled through the API server.

For LAP running where pod IPs do not route (a laptop, a VM next to the cluster), each sandbox pod
gets a port on 127.0.0.1; every TCP connection to it opens one port-forward websocket
(`pods/portforward`, protocol `v4.channel.k8s.io`) to the pod's sandboxd port. Frames carry a
channel byte: 0 data, 1 errors; the first frame of each channel starts with the port (2 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

log = structlog.get_logger("lap.kubernetes")
_DATA, _ERROR = 0, 1


class PortForwards:
    """One local listener per (namespace, pod, port), kept until `aclose`."""

    def __init__(self, configuration: Configuration) -> None:
        self._api = WsApiClient(configuration)
        self._servers: dict[tuple[str, str, int], asyncio.Server] = {}

    async def address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        """Return the local (host, port) that reaches `port` of the pod."""
        key = (namespace, pod, port)
        server = self._servers.get(key)
        if server is None:
            server = await asyncio.start_server(functools.partial(self._pipe, *key), "127.0.0.1", 0)
            self._servers[key] = server
        local: tuple[str, int] = server.sockets[0].getsockname()[:2]
        return local

    async def forget(self, namespace: str, pod: str) -> None:
        """Close the listeners of a pod that is gone."""
        for key in [key for key in self._servers if key[:2] == (namespace, pod)]:
            server = self._servers.pop(key)
            server.close()

    async def aclose(self) -> None:
        """Close every listener and the API connections."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        await self._api.close()

    async def _pipe(
        self, namespace: str, pod: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            # Typed as returning str; with _preload_content=False it is aiohttp's ws_connect.
            api: Any = client.CoreV1Api(self._api)
            connecting = await api.connect_get_namespaced_pod_portforward(
                pod, namespace, ports=port, _preload_content=False
            )
            async with connecting as ws:
                upstream = asyncio.ensure_future(_up(reader, ws))
                try:
                    await _down(ws, writer, pod)
                finally:
                    upstream.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
                        await upstream
        except (aiohttp.ClientError, client.exceptions.ApiException, ConnectionError) as error:
            log.warning("portforward.failed", pod=pod, namespace=namespace, error=str(error))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _up(reader: asyncio.StreamReader, ws: Any) -> None:
    while data := await reader.read(65536):
        await ws.send_bytes(bytes([_DATA]) + data)
    # The protocol has no half-close: a client that is done closes the connection, and so do we.
    await ws.close()


async def _down(ws: Any, writer: asyncio.StreamWriter, pod: str) -> None:
    prefixed = {_DATA, _ERROR}  # channels whose first frame still carries the port
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY or not message.data:
            break  # closed, or an error
        channel, data = message.data[0], message.data[1:]
        if channel in prefixed:
            prefixed.discard(channel)
            data = data[2:]
        if channel == _DATA and data:
            writer.write(data)
            await writer.drain()
        elif channel == _ERROR and data:
            log.warning("portforward.error", pod=pod, error=data.decode(errors="replace"))
            break
