"""Printing session events in a terminal: reply text as it streams, tools and errors set apart."""

from __future__ import annotations

import json
from typing import Any

import click

from lap_core._events import (
    Error,
    EventRecord,
    ReasoningDelta,
    Status,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    Usage,
    UserMessage,
)

MAX_RESULT_LINES = 8


def _summary(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EventPrinter:
    """Prints records one at a time, keeping track of whether the cursor is mid-line."""

    def __init__(self, *, show_user: bool = False) -> None:
        self.show_user = show_user
        self._mid_line = False

    def _line(self, text: str, **style: Any) -> None:
        if self._mid_line:
            click.echo()
            self._mid_line = False
        click.secho(text, **style)

    def print(self, record: EventRecord) -> None:
        """Print one record."""
        event = record.event
        if isinstance(event, UserMessage):
            if self.show_user:
                self._line(f"you> {event.text}", bold=True)
        elif isinstance(event, TextDelta):
            click.echo(event.text, nl=False)
            self._mid_line = not event.text.endswith("\n")
        elif isinstance(event, ReasoningDelta):
            click.secho(event.text, nl=False, dim=True, italic=True)
            self._mid_line = not event.text.endswith("\n")
        elif isinstance(event, ToolCall):
            self._line(f"⚙ {event.name} {_summary(event.input)}", fg="cyan")
        elif isinstance(event, ToolResult):
            lines = event.output.rstrip("\n").splitlines() or ["(no output)"]
            shown = lines[:MAX_RESULT_LINES] + (
                [f"… {len(lines) - MAX_RESULT_LINES} more lines"] if len(lines) > MAX_RESULT_LINES else []
            )
            for line in shown:
                self._line(f"  │ {line}", fg="red" if event.is_error else None, dim=not event.is_error)
        elif isinstance(event, Status):
            self._line(f"· {event.phase.replace('_', ' ')} {event.detail}".rstrip(), dim=True)
        elif isinstance(event, Error):
            self._line(f"✗ {event.code}: {event.message}", fg="red", err=True)
        elif isinstance(event, Usage):
            pass
        elif isinstance(event, TurnEnd):
            if self._mid_line:
                click.echo()
                self._mid_line = False
            if event.status != "completed":
                self._line(f"(turn {event.status}{': ' + event.reason if event.reason else ''})", fg="yellow")
