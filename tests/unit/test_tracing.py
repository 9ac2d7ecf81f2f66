"""The pieces of tracing that need no exporter: the job's traceparent, the gateway's header, tracing off.

The whole trace, through real processes and a real OTLP/HTTP receiver: tests/server/test_tracing.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from lap_core import Session
from lap_core import _tracing as tracing
from lap_core._engine.jobs import TurnJob, job_for, work_of

if TYPE_CHECKING:
    import pytest

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SESSION = Session(id="ses_1", team_id="team_1", agent_id="agt_1", title="")


def test_a_turn_job_carries_the_traceparent_and_leaves_it_out_when_there_is_none() -> None:
    traced = job_for("ses_1", TurnJob(turn_id="turn_1", traceparent=TRACEPARENT))
    assert traced.payload == {"turn_id": "turn_1", "traceparent": TRACEPARENT}
    assert work_of(traced) == TurnJob(turn_id="turn_1", traceparent=TRACEPARENT)
    untraced = job_for("ses_1", TurnJob(turn_id="turn_1"))
    assert untraced.payload == {"turn_id": "turn_1"}  # as before tracing: any worker version reads it
    assert work_of(untraced) == TurnJob(turn_id="turn_1")


def test_the_traceparent_names_the_current_span_and_its_context_is_its_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_provider", object())  # on, without an SDK: the API's spans suffice here
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
    with trace.use_span(span):
        assert tracing.traceparent() == TRACEPARENT
        sandbox_sent = [(b"content-type", b"application/json"), (b"traceparent", b"00-" + b"1" * 32 + b"-x-01")]
        assert tracing.with_traceparent(sandbox_sent) == [
            (b"content-type", b"application/json"),
            (b"traceparent", TRACEPARENT.encode()),  # the proxy's, in place of the sandbox's
        ]
    parent = trace.get_current_span(tracing.context_of(TRACEPARENT)).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (TRACE_ID, SPAN_ID, True)
    assert tracing.context_of(None) is None
    assert tracing.session_attributes(SESSION, turn_id="turn_1", job_attempt=2) == {
        "lap.session.id": "ses_1",
        "lap.team.id": "team_1",
        "lap.agent.id": "agt_1",
        "lap.turn.id": "turn_1",
        "lap.job.attempt": 2,
    }


def test_a_model_call_joins_the_harness_span_of_its_session_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_provider", object())
    harness = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
    with tracing.harness_span("ses_1", harness):
        assert tracing._harness_spans["ses_1"] is harness
    assert "ses_1" not in tracing._harness_spans  # the turn's attempt ended: later calls start their own trace


def test_off_every_call_site_does_nothing() -> None:
    assert tracing._provider is None  # no test process installs one: tests/server/test_tracing.py runs `lap serve`
    with tracing.span("x", {"a": 1}) as span:
        assert span is trace.INVALID_SPAN
        assert tracing.traceparent() is None
    assert tracing.session_attributes(SESSION, turn_id="turn_1") == {}
    headers = [(b"traceparent", b"sandbox's")]
    assert tracing.with_traceparent(headers) is headers  # unchanged, as before tracing
    with tracing.model_call("ses_1", "team_1", "agt_1", "m", "/v1/chat/completions") as call:
        tracing.model_call_ended(call, 200, None)
