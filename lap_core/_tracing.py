"""OpenTelemetry tracing: one trace per turn, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

The code that makes spans calls `span` (the `opentelemetry-api` tracer's, once a provider is
installed); with tracing off it costs a global's test (bench/tracing_overhead.py).
`setup()`, called as a runtime starts (never at import), installs the SDK provider with the
OTLP/HTTP exporter when the variable is set; the standard `OTEL_*` variables configure it.

A turn's trace crosses processes in two ways: the `traceparent` of the span that sent the message
rides in the turn's job (`TurnJob.traceparent`), so the worker that runs it, or the one that
resumes it after the first died, continues the trace; and the LLM proxy finds the span of the
harness running in a session's sandbox (`harness_span`) to parent its model calls, and passes
their `traceparent` to the gateway. See docs/observability.md.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from contextlib import AbstractContextManager

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from lap_core._models import Session
    from lap_core._vault.answer import Tokens


ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
tracer = trace.get_tracer("lap")
"""LAP's tracer: a proxy that records nothing until `setup` installs a provider."""

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_OFF = contextlib.nullcontext(trace.INVALID_SPAN)
# session id -> the span of the harness running its turn in this process (the proxy's model calls' parent)
_harness_spans: dict[str, trace.Span] = {}


def span(
    name: str,
    attributes: Mapping[str, str | int | bool] | None = None,
    *,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> AbstractContextManager[trace.Span]:
    """Start a span as the current one (`context`: its parent, else the current span).

    With tracing off, a shared do-nothing context: the API's no-op spans cost more than this.
    """
    if _provider is None:
        return _OFF
    # A failure sets the span's status (the exception's type and message), no stack trace.
    return tracer.start_as_current_span(name, context, kind, attributes, record_exception=False)


def session_attributes(session: Session, **more: str | int | bool) -> dict[str, str | int | bool]:
    """Return a span's attributes naming a session, its team and agent, and `more` (`lap.<key>`).

    Nothing with tracing off: nobody reads them.
    """
    if _provider is None:
        return {}
    return {
        "lap.session.id": session.id,
        "lap.team.id": session.team_id,
        "lap.agent.id": session.agent_id,
        **{f"lap.{key.replace('_', '.')}": value for key, value in more.items()},
    }


def setup() -> bool:
    """Install the SDK tracer provider exporting over OTLP/HTTP if `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

    Return whether spans are exported. Once per process: a second call (another runtime in the
    same process) changes nothing.
    """
    global _provider
    if _provider is not None:
        return True
    if not os.environ.get(ENDPOINT):
        return False
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The pid tells the processes of a cluster apart (which worker ran, which one resumed).
    service = os.environ.get("OTEL_SERVICE_NAME") or "lap"
    resource = Resource.create({"service.name": service, "process.pid": os.getpid()})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return True


def flush() -> None:
    """Export the spans ended so far (a runtime that stops calls it)."""
    if _provider is not None:
        _provider.force_flush()


def traceparent() -> str | None:
    """Return the current span's W3C `traceparent`, None when there is no recording span."""
    if _provider is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context | None:
    """Return the context a `traceparent` names (None for none: the span starts a trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


@contextlib.contextmanager
def harness_span(session_id: str, span: trace.Span) -> Iterator[None]:
    """While in it, `span` is the parent of the model calls the proxy relays for the session."""
    if not span.get_span_context().is_valid:
        yield
        return
    _harness_spans[session_id] = span
    try:
        yield
    finally:
        if _harness_spans.get(session_id) is span:
            del _harness_spans[session_id]


def model_call(
    session_id: str, team_id: str, agent_id: str, model: str, path: str
) -> AbstractContextManager[trace.Span]:
    """Start the span of a model call the LLM proxy relays for a session.

    Its parent is the session's harness span when that runs in this process (the sandbox's
    requests come to the proxy of the process running its turn), else it starts a trace.
    """
    if _provider is None:
        return _OFF
    harness = _harness_spans.get(session_id)
    context = None if harness is None else trace.set_span_in_context(harness)
    attributes = {
        "lap.session.id": session_id,
        "lap.team.id": team_id,
        "lap.agent.id": agent_id,
        "lap.model": model,
        "lap.llm.path": path,
    }
    return span("lap.llm.call", attributes, context=context, kind=SpanKind.CLIENT)


def model_call_ended(call: trace.Span, status: int, tokens: Tokens | None) -> None:
    """Give a model call's span the gateway's answer status and the tokens the call used, as metered."""
    if not call.is_recording():
        return
    call.set_attribute("http.response.status_code", status)
    if tokens is not None:
        call.set_attributes(
            {
                "gen_ai.usage.input_tokens": tokens.input,
                "gen_ai.usage.output_tokens": tokens.output,
                "lap.llm.cached_tokens": tokens.cached,
            }
        )


def with_traceparent(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return request headers that carry the current span's `traceparent` (in place of any they had)."""
    parent = traceparent()
    if parent is None:
        return headers
    kept = [(name, value) for name, value in headers if name not in (b"traceparent", b"tracestate")]
    return [*kept, (b"traceparent", parent.encode())]
