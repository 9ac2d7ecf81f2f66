"""An integration for tests that writes every delivery it gets to a file (one JSON line each).

Register the module as a plugin (`Lap(plugins=[recording_integration])`); it reads `RECORDER_FILE`,
and waits `RECORDER_DELAY` seconds in each delivery after writing it down (so a test can kill the
process mid-delivery). Run as a program (`python -m tests.fakes.recording_integration`), it is a LAP
worker with the fake backend and this integration, until killed: the durability test's worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from lap_core import Integration, IntegrationSpec, Lap, hookimpl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lap_core import Delivery

NAME = "recorder"


class RecorderSettings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """Where the recorder writes, and how long each delivery takes."""

    recorder_file: str
    recorder_delay: float = 0.0


class RecordingIntegration(Integration):
    """Appends `{"key", "session_id", "seq", "type", "attempt", "pid"}` per delivery to `RECORDER_FILE`."""

    def __init__(self, settings: RecorderSettings) -> None:
        self.path = Path(settings.recorder_file)
        self.delay = settings.recorder_delay
        self.lap: Lap | None = None

    async def start(self, lap: Lap) -> None:
        self.lap = lap

    async def on_event(self, delivery: Delivery) -> None:
        record = delivery.record
        line = {
            "key": delivery.key,
            "session_id": record.session_id,
            "seq": record.seq,
            "type": record.event.__struct_config__.tag,
            "attempt": delivery.attempt,
            "pid": os.getpid(),
        }
        with self.path.open("a") as file:  # one small write: a line is whole or absent after a kill
            file.write(json.dumps(line) + "\n")
        if self.delay:
            await anyio.sleep(self.delay)


def read(path: Path) -> list[dict[str, Any]]:
    """Return the deliveries recorded in `path` (the whole lines of it)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


@hookimpl
def lap_integrations() -> Iterator[IntegrationSpec]:
    yield IntegrationSpec(name=NAME, factory=RecordingIntegration, settings=RecorderSettings)


async def _work() -> None:
    from tests.fakes import recording_integration
    from tests.fakes.plugin import FakesPlugin

    async with Lap(plugins=[FakesPlugin(), recording_integration], env=dict(os.environ)):
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(_work)
