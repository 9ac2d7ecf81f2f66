"""Waiting for one Kubernetes object to reach a state: a get, then a watch from its resourceVersion.

A watch that ends (server timeout) is resumed from the last version seen; one that fails with
410 Gone (the version was compacted away) starts over with a fresh get. No polling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

WATCH_SECONDS = 60


async def states(
    get: Callable[[], Awaitable[dict[str, Any] | None]],
    list_function: Callable[..., Any],
    *args: Any,
    name: str,
) -> AsyncIterator[dict[str, Any] | None]:
    """Yield the object named `name` (None while it does not exist) now and after every change.

    `get` reads it (None on 404); `list_function(*args, ...)` is the list call a watch streams,
    e.g. `CustomObjectsApi.list_namespaced_custom_object` with its group/version/namespace/plural.
    """
    while True:
        current = await get()
        yield current
        version = (current or {}).get("metadata", {}).get("resourceVersion")
        if version is None:
            # Absent: watch from the list's version, so a create right after our get is not missed.
            listed = await list_function(*args, field_selector=f"metadata.name={name}")
            version = _list_version(listed)
        stream = watch.Watch()
        try:
            async with stream.stream(
                list_function,
                *args,
                field_selector=f"metadata.name={name}",
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                allow_watch_bookmarks=True,
            ) as events:
                async for event in events:
                    kind = event["type"]
                    if kind == "BOOKMARK":
                        continue
                    raw: dict[str, Any] = event["raw_object"]
                    yield None if kind == "DELETED" else raw
        except ApiException as error:
            if error.status != 410:
                raise
            # Gone: our version is older than the server keeps; start over from a fresh read.
        await anyio.lowlevel.checkpoint()


def _list_version(listed: Any) -> str:
    if isinstance(listed, dict):
        return str(listed["metadata"]["resourceVersion"])
    return str(listed.metadata.resource_version)
