"""How a turn that starts over goes on from the harness's own session as it was before the turn.

A harness CLI stores the user's message (and its tool calls) in its native session as soon as
a turn begins. When the sandbox is lost mid-turn, the turn starts over in a new sandbox on the
same volume; resuming the native session as the lost attempt left it would give the model the
message twice (issue 12). So before each turn that resumes a native session, the paths the
harness declares (`Harness.native_state`) are copied to its snapshot directory, tagged with the
turn's id, and a start-over of that turn copies them back. Where there is no such copy, the
start-over begins a new native session and tells it the conversation so far (`with_history`),
as after a lost volume.

Copy and restore run inside the sandbox, as one `sh` exec with the agent's own rights: the files
are the agent's, and the host never opens them. The shell script gets every path and id as an
argument, never in its text. Tested by tests/unit/test_native_state.py, tests/unit/test_engine.py
and, for each harness with its real CLI, by `HarnessConformance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from lap_core._events import HarnessSession, Status, TextDelta, UserMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from lap_core._events import EventRecord, SessionEvent
    from lap_core._harness import Harness
    from lap_core._sandbox import SandboxClient

__all__ = [
    "REPLAYED",
    "began_new_session",
    "native_session_before",
    "restore_native_state",
    "snapshot_native_state",
    "with_history",
]

log = structlog.get_logger("lap.engine")

HISTORY_LIMIT = 200_000
"""Characters of conversation replayed to a harness whose own session was lost (the newest kept)."""
REPLAYED = "the conversation is replayed to a new harness session"
"""How a `turn_restarted` or `volume_lost` status says that the attempt began a new native session."""
TIMEOUT = 120.0
"""Seconds a copy may take (a native session is usually well under a few MB)."""
NO_SNAPSHOT = 3
"""The script's exit code when the snapshot directory holds no copy taken for this turn."""

# $1 mode, $2 snapshot directory, $3 turn id, then one pattern per declared path (a glob in its
# last component at most). Pattern i is copied into <snapshot>/i/; the copy is complete once
# <snapshot>/turn names the turn: it is written last. IFS is empty: a pattern is one path, and
# globs still expand. Every process costs a warm turn 1-2 ms, so a snapshot starts few: rm, one
# mkdir for all the directories (a function gets their list as its own arguments), one cp per
# pattern that matches (a subshell gathers the matches, then becomes the cp).
SCRIPT = """\
set -u
IFS=''
mode=$1 snapshot=$2 turn=$3
shift 3
count=$#
if [ "$mode" = snapshot ]; then
  if [ -e "$snapshot" ] || [ -L "$snapshot" ]; then rm -rf -- "$snapshot" || exit 1; fi
  i=0
  for pattern do set -- "$@" "$snapshot/$i"; i=$((i + 1)); done
  make_dirs() { shift "$count"; mkdir -p -- "$@"; }
  make_dirs "$@" || exit 1
  i=0
  for pattern do
    [ "$i" -lt "$count" ] || break
    ( set --
      for path in $pattern; do if [ -e "$path" ] || [ -L "$path" ]; then set -- "$@" "$path"; fi; done
      [ "$#" -eq 0 ] || exec cp -PpR -- "$@" "$snapshot/$i/" ) || exit 1
    i=$((i + 1))
  done
  printf '%s\\n' "$turn" > "$snapshot/turn"
  exit
fi
tagged=''
{ IFS= read -r tagged < "$snapshot/turn"; } 2>/dev/null
[ "$tagged" = "$turn" ] || exit 3
i=0
for pattern do
  for path in $pattern; do
    if [ -e "$path" ] || [ -L "$path" ]; then rm -rf -- "$path" || exit 1; fi
  done
  parent=${pattern%/*}
  [ "$parent" != "$pattern" ] || parent=.
  [ -n "$parent" ] || parent=/
  [ -d "$parent" ] || mkdir -p -- "$parent" || exit 1
  cp -PpR -- "$snapshot/$i/." "$parent/" || exit 1
  i=$((i + 1))
done
"""


async def _run(sandbox: SandboxClient, harness: Harness, mode: str, turn_id: str) -> int | None:
    """Run the script; return its exit code (None: the harness declares no native state)."""
    state = harness.native_state
    if state is None or not state.paths:
        return None
    argv = ["sh", "-c", SCRIPT, "sh", mode, state.snapshot_dir, turn_id, *state.paths]
    # A SandboxdError without a status (the sandbox went away) reaches the caller: the turn's
    # attempt is lost then, and its start-over looks for the copy again.
    result = await sandbox.exec(argv, timeout=TIMEOUT)
    if result.exit_code not in (0, NO_SNAPSHOT):
        # What the agent's files made the copy print: untrusted, so only its end, as data.
        log.warning(f"native_state.{mode}_failed", exit_code=result.exit_code, stderr=result.stderr[-500:])
    return result.exit_code


async def snapshot_native_state(sandbox: SandboxClient, harness: Harness, turn_id: str) -> bool:
    """Copy the harness's native state for a start-over of `turn_id`; return whether a copy was made.

    Call it before the turn's first attempt starts its process, and only then: later, the
    attempt may have changed the state. A failed copy only means a start-over replays instead.
    """
    return await _run(sandbox, harness, "snapshot", turn_id) == 0


async def restore_native_state(sandbox: SandboxClient, harness: Harness, turn_id: str) -> bool:
    """Put back the copy taken before `turn_id`; return False if there is none (or it failed)."""
    code = await _run(sandbox, harness, "restore", turn_id)
    if code == NO_SNAPSHOT:
        log.info("native_state.no_snapshot")
    return code == 0


async def native_session_before(before: AsyncIterator[EventRecord]) -> str | None:
    """Return the harness's session id as it was when the turn began, from the log `before` it."""
    native = None
    async for record in before:
        if isinstance(record.event, HarnessSession):
            native = record.event.native_session_id
    return native


async def with_history(before: AsyncIterator[EventRecord], text: str) -> str:
    """Return the message prefixed with the conversation in the log `before` it."""
    lines: list[str] = []
    async for record in before:
        event = record.event
        if isinstance(event, UserMessage):
            lines.append(f"\nUser: {event.text}\nAssistant: ")
        elif isinstance(event, TextDelta) and lines:
            lines[-1] += event.text
    story = "".join(lines)[-HISTORY_LIMIT:]
    return f"(Your earlier session was lost; the conversation so far follows.)\n{story}\n\n---\n\n{text}"


def began_new_session(logged: Sequence[SessionEvent]) -> bool:
    """Whether the turn's latest attempt (its events so far: `logged`) began a new native session.

    A worker re-attaching to that attempt must hand the harness what the attempt got (no id),
    or the harness maps its output differently from what the log holds.
    """
    marks = [e for e in logged if isinstance(e, Status) and e.phase in ("turn_restarted", "volume_lost")]
    return bool(marks) and (marks[-1].phase == "volume_lost" or marks[-1].detail.endswith(REPLAYED))
