"""What tracing costs a turn when it is off (no `OTEL_EXPORTER_OTLP_ENDPOINT`), and when it records.

Times the span call sites of one turn as the engine runs them (lap_core/_tracing.py's API
calls: the send, the worker's turn span, bring-up, the harness span registered for the proxy,
one model call's span and its `traceparent`), first with no SDK provider (off: the default),
and the API request's span (lap-server's),
then with the SDK's provider recording spans into a processor that drops them (on, export left
out). Prints ns per turn's call sites and per call site, next to an empty loop.

    .venv/bin/python bench/tracing_overhead.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from lap_core import Session
from lap_core import _tracing as tracing
from lap_core._vault.answer import Tokens
from lap_server.observability import request_span

ROUNDS = 2_000
REPEATS = 20
CALL_SITES = 6  # send, turn, bring-up, harness (+ registered for the proxy), model call, its traceparent
SCOPE: Any = {"headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")]}
HEADERS = [(b"content-type", b"application/json")]
TOKENS = Tokens(input=12, output=7)
SESSION = Session(id="ses_bench", team_id="team_default", agent_id="agt_bench", title="")


def one_turn() -> None:
    """The tracing calls of one turn with one model call, as the engine and proxy make them."""
    with tracing.span("lap.send_message", tracing.session_attributes(SESSION)):
        parent = tracing.traceparent()
    attributes = tracing.session_attributes(SESSION, turn_id="turn_x", harness="script", model="m", job_attempt=1)
    with tracing.span("lap.turn", attributes, context=tracing.context_of(parent), kind=SpanKind.CONSUMER):
        with tracing.span("lap.sandbox.bring_up", tracing.session_attributes(SESSION)):
            pass
        with (
            tracing.span("lap.harness", tracing.session_attributes(SESSION)) as span,
            tracing.harness_span(SESSION.id, span),
        ):
            with tracing.model_call(SESSION.id, SESSION.team_id, SESSION.agent_id, "m", "/v1/chat/completions") as call:
                tracing.with_traceparent(HEADERS)
                tracing.model_call_ended(call, 200, TOKENS)


def one_request() -> None:
    """The API request's span, as lap-server's `RequestObserver` starts it."""
    with request_span(SCOPE, "POST") as span:
        if span.is_recording():
            span.set_attributes({"http.route": "/api/sessions/{session_id}/messages"})


def empty() -> None:
    pass


def ns_per_call(function: object) -> float:
    """The least mean time of a call over `REPEATS` runs of `ROUNDS` calls (the machine's noise left out)."""
    assert callable(function)
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        for _ in range(ROUNDS):
            function()
        best = min(best, (time.perf_counter_ns() - started) / ROUNDS)
    return best


def report(label: str) -> None:
    base = ns_per_call(empty)
    per_turn = ns_per_call(one_turn) - base
    per_request = ns_per_call(one_request) - base
    print(
        f"{label:<40} {per_turn / 1000:8.2f} us per turn ({per_turn / CALL_SITES:6.0f} ns per call site)"
        f"   {per_request / 1000:6.2f} us per API request"
    )


def main() -> None:
    assert not tracing.setup(), "unset OTEL_EXPORTER_OTLP_ENDPOINT: this measures tracing off first"
    print(f"empty loop body {ns_per_call(empty):.0f} ns; best of {REPEATS} runs of {ROUNDS}; {CALL_SITES} sites a turn")
    report("off (no OTEL_EXPORTER_OTLP_ENDPOINT)")

    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

    class Drop(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            pass

    provider = TracerProvider()
    provider.add_span_processor(Drop())
    trace.set_tracer_provider(provider)
    tracing._provider = provider  # as `setup` leaves it, minus the exporter
    report("on (SDK spans recorded, not exported)")


if __name__ == "__main__":
    main()
