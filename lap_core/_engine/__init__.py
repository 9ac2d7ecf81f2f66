"""The engine: the one place that orchestrates agents, sessions and turns."""

from lap_core._engine.agents import Agents
from lap_core._engine.bus import EventBus
from lap_core._engine.sandboxes import SandboxProvider
from lap_core._engine.sessions import Sessions
from lap_core._engine.turns import TurnRunner
from lap_core._engine.worker import Worker

__all__ = ["Agents", "EventBus", "SandboxProvider", "Sessions", "TurnRunner", "Worker"]
