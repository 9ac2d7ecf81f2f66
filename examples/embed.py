"""Embedding LAP in your own service: an agent, a session and one turn, from Python, no HTTP.

Run: `LITELLM_API_BASE=... LITELLM_API_KEY=... python examples/embed.py MODEL "your message"`.
The session, its sandbox and its workspace remain afterwards (see `lap sessions list`).
"""

from __future__ import annotations

import sys

import anyio

from lap_core import Error, Lap, NotFound, TextDelta, ToolCall, ToolResult, TurnEnd


async def main(model: str, message: str) -> int:
    async with Lap() as lap:
        try:
            agent = await lap.agents.get("embedded")
        except NotFound:
            agent = await lap.agents.create("embedded", harness="opencode", model=model)
        session = await lap.sessions.create(agent.id)
        async for record in lap.sessions.stream(session.id, message):
            match record.event:
                case TextDelta(text=text):
                    print(text, end="", flush=True)
                case ToolCall(name=name, input=arguments):
                    print(f"\n[tool] {name} {arguments}")
                case ToolResult(output=output):
                    print(f"[result] {output.strip()}")
                case Error(code=code, message=problem):
                    print(f"\n[error] {code}: {problem}", file=sys.stderr)
                case TurnEnd(status=status):
                    print(f"\n[turn {status}] session {session.id}")
                    return 0 if status == "completed" else 1
    return 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1], sys.argv[2]))
