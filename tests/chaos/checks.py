"""What the chaos suite checks of each session once the faults are over, and the figures it reports.

Every problem is counted in one of the figures and described in `Figures.problems`:
- lost: a message without a `turn_end`; a `line i` missing from the reply of a completed turn; a
  missing file; a gap in the log's seqs; an event of the log that the client's stream lacks;
- duplicated: a message stored twice; two `turn_end`s; a `line i` twice in one attempt; an event
  after the turn's `turn_end`; a seq twice; an event the stream delivered twice; a turn whose
  process ran more often than it was (re)started;
- failed: a turn that ended other than `completed` (each with its reason);
- context: a turn whose harness did not get the previous turn's native session id;
- cut: a model turn whose model stream a fault cut though the turn's process lived on
  (tests/chaos/models.py).
A turn that was restarted (its sandbox was lost: `status` `turn_restarted`) is judged by its last
attempt, the events after the last `turn_restarted`: that is the reply the user sees; a model turn
whose process made its request again is judged by the answer to its last request.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.chaos.clients import LINES, last_request

if TYPE_CHECKING:
    from pathlib import Path

    from tests.chaos.clients import SessionClient


@dataclass
class Figures:
    """The counts of one chaos run (one fault kind)."""

    kind: str
    faults: int = 0
    turns: int = 0
    interrupted: int = 0  # turns a fault hit mid-stream (each gives a recovery time)
    resumed: int = 0  # `turn_resumed` events (another worker took the turn over)
    restarted: int = 0  # `turn_restarted` events (the sandbox was lost: the turn started over)
    lost: int = 0
    duplicated: int = 0
    failed: int = 0
    context: int = 0
    cut: int = 0
    unexpected_exits: int = 0
    refused_starts: int = 0  # restarted processes that would not start while the database was down (exit 1)
    tracebacks: int = 0  # in LAP's logs
    library_tracebacks: int = 0  # asyncpg's pool warnings while the database is down
    reconnects: int = 0
    post_retries: int = 0
    recovery: list[float] = field(default_factory=list)
    not_interrupted: int = 0  # hit turns that ended before the fault touched them (SIGTERM: within the grace)
    model_turns: int = 0
    model_calls: int = 0  # requests the fake LLM got from model turns
    spared: int = 0  # model streams of other processes' turns in flight at a fault, that went on whole
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def problem(self, figure: str, text: str, count: int = 1) -> None:
        setattr(self, figure, getattr(self, figure) + count)
        self.problems.append(f"[{figure}] {text}")

    def percentile(self, p: float) -> float | None:
        if not self.recovery:
            return None
        ordered = sorted(self.recovery)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def row(self) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        recovery = f"{p50:5.2f} s {p99:5.2f} s" if p50 is not None and p99 is not None else "   -       -   "
        return (
            f"{self.kind:<17} {self.faults:>6} {self.turns:>5} {self.interrupted:>11} {self.resumed:>7}"
            f" {self.restarted:>9} {self.lost:>4} {self.duplicated:>10} {self.failed:>6} {self.context:>7}"
            f" {self.cut:>3} {self.unexpected_exits:>5} {self.tracebacks:>10}"
            f" {self.reconnects:>10}   {recovery}   {self.seconds:5.0f} s"
        )

    HEADER = (
        "kind              faults turns interrupted resumed restarted lost duplicated failed context cut"
        " exits tracebacks reconnects   recovery p50/p99   time"
    )


RESULTS: dict[str, Figures] = {}
"""The figures of each kind run in this pytest session (printed together at its end, by conftest.py)."""


def _line(event: dict[str, Any]) -> int | None:
    if event["type"] == "text_delta" and event["text"].startswith("line "):
        return int(event["text"].split()[1])
    return None


def check_session(figures: Figures, client: SessionClient, history: list[dict[str, Any]], workspace: Path) -> None:
    """Check one session's log, stream, workspace and context against what its client sent; count into `figures`.

    Each attempt of a turn starts its process once (a resumed turn re-attaches to it): the process
    of a turn runs at most once per attempt (`streams.log`, `files.log` in the workspace).
    """
    session = client.session_id
    figures.turns += len(client.sent)
    figures.reconnects += max(0, client.connections - 1)
    figures.post_retries += sum(s.retried for s in client.sent)

    # The log: seqs 1..n, each once.
    seqs = [r["seq"] for r in history]
    if seqs != list(range(1, len(seqs) + 1)):
        counts = Counter(seqs)
        missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        twice = sorted(s for s, n in counts.items() if n > 1)
        if missing:
            figures.problem("lost", f"{session}: seqs missing from the log: {missing}", len(missing))
        if twice:
            figures.problem("duplicated", f"{session}: seqs twice in the log: {twice}", len(twice))

    # The stream the client followed (with its reconnects) is the log, each event once.
    streamed = Counter(r["seq"] for r in client.records)
    repeated = {seq: n for seq, n in streamed.items() if n > 1}
    if repeated:
        figures.problem("duplicated", f"{session}: events streamed more than once: {repeated}", len(repeated))
    absent = [r["seq"] for r in history if r["seq"] not in streamed]
    if absent:
        figures.problem("lost", f"{session}: events of the log the stream never delivered: {absent}", len(absent))
    by_seq = {r["seq"]: r for r in client.records}
    differ = [r["seq"] for r in history if r["seq"] in by_seq and by_seq[r["seq"]] != r]
    if differ:
        figures.problem("lost", f"{session}: events the stream delivered other than logged: {differ}", len(differ))
    if [r["seq"] for r in client.records] != seqs and not (repeated or absent):
        figures.problem("duplicated", f"{session}: the stream delivered the events out of order")

    # Every message stored once, and answered once.
    sent_ids = [s.turn_id for s in client.sent]
    stored = [r["turn_id"] for r in history if r["event"]["type"] == "user_message"]
    if stored != sent_ids:
        extra = Counter(stored) - Counter(sent_ids)
        missing_messages = Counter(sent_ids) - Counter(stored)
        if extra:
            figures.problem("duplicated", f"{session}: messages stored but not sent (or twice): {dict(extra)}")
        if missing_messages:
            figures.problem("lost", f"{session}: messages sent but not stored: {dict(missing_messages)}")

    streams_log = _lines(workspace / "streams.log")
    files_log = _lines(workspace / "files.log")
    native = 0
    for sent in client.sent:
        records = [r for r in history if r["turn_id"] == sent.turn_id]
        events = [r["event"] for r in records]
        where = f"{session} {sent.turn_id} ({sent.tag}, {sent.kind})"
        ends = [i for i, e in enumerate(events) if e["type"] == "turn_end"]
        if not ends:
            figures.problem("lost", f"{where}: no turn_end")
            continue
        if len(ends) > 1:
            figures.problem("duplicated", f"{where}: {len(ends)} turn_ends")
        if ends[0] != len(events) - 1:
            after = [e["type"] for e in events[ends[0] + 1 :]]
            figures.problem("duplicated", f"{where}: events after its turn_end: {after}", len(after))
        end = events[ends[0]]
        phases = [e["phase"] for e in events if e["type"] == "status"]
        figures.resumed += phases.count("turn_resumed")
        restarts = phases.count("turn_restarted")
        figures.restarted += restarts
        cut = max((i for i, e in enumerate(events) if e.get("phase") == "turn_restarted"), default=-1)
        attempt = events[cut + 1 :]
        completed = end["status"] == "completed"
        if not completed:
            errors = [f"{e['code']}: {e['message']}" for e in events if e["type"] == "error"]
            figures.problem("failed", f"{where}: ended {end['status']} ({end.get('reason')!r}; errors {errors})")

        # The reply of the last attempt (to its last model request): each line once, in order (all, if completed).
        lines = [n for n in map(_line, last_request(attempt)) if n is not None]
        if sent.kind in ("stream", "model"):
            twice = sorted(n for n, c in Counter(lines).items() if c > 1)
            if twice:
                figures.problem("duplicated", f"{where}: lines more than once: {twice}", len(twice))
            if lines != sorted(set(lines)) and not twice:
                figures.problem("duplicated", f"{where}: lines out of order: {lines}")
            gone = sorted(set(range(1, LINES + 1)) - set(lines)) if completed else []
            if gone:
                figures.problem("lost", f"{where}: completed without lines {gone}", len(gone))
            ran = streams_log.count(sent.turn_id)
        else:
            results = [e for e in attempt if e["type"] == "tool_result"]
            if completed and [r["output"].strip() for r in results] != [sent.tag]:
                figures.problem("lost", f"{where}: tool results {results}, not one saying {sent.tag}")
            content = _read(workspace / "files" / sent.tag)
            if completed and content != f"{sent.tag}\n":
                figures.problem("lost", f"{where}: files/{sent.tag} holds {content!r}")
            ran = files_log.count(sent.tag)
        if ran > restarts + 1:
            figures.problem("duplicated", f"{where}: its process ran {ran} times in {restarts + 1} attempt(s)")
        if completed and ran == 0:
            figures.problem("lost", f"{where}: completed, but its process never ran")

        # The context: the harness got the previous turn's native session id.
        ids = [e["native_session_id"] for e in attempt if e["type"] == "harness_session"]
        ids = ids or [e["native_session_id"] for e in events if e["type"] == "harness_session"][-1:]
        if len(ids) > 1:
            figures.problem("duplicated", f"{where}: {len(ids)} harness_session events in one attempt")
        # A start-over with no copy of the harness's session from before the turn starts a new one.
        replayed = "replayed" in next(
            (e.get("detail", "") for e in reversed(events) if e.get("phase") == "turn_restarted"), ""
        )
        if ids:
            k = int(ids[-1].split("-")[1])
            if k != native + 1 and not (replayed and k == 1):
                # The script harness reports native-(n+1) when it was given native-n (native-0: none).
                got = f"native-{k - 1}" if k > 1 else "no native session id"
                previous = f"native-{native}" if native else "none"
                figures.problem("context", f"{where}: its harness got {got}, not the previous turn's ({previous})")
            native = k
        elif completed:
            figures.problem("context", f"{where}: completed without a harness_session")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
