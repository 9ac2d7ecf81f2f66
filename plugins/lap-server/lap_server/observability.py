"""Request ids, one log line and one trace span per request (logger `lap.http`) and the app's Prometheus metrics.

`RequestObserver` wraps the whole app, outside Litestar's routing and error handling, so unknown
paths and errors that became 500s are logged and counted like every other request.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from lap_core import DecisionCollector, UsageCollector
from lap_server.auth import Principal

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from litestar.handlers import HTTPRouteHandler
    from litestar.types import ASGIApp, Message, Receive, Scope, Send
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from lap_core import JobStatus, Lap

log = structlog.get_logger("lap.http")
# One span per request (a no-op unless the runtime installed an exporter: OTEL_EXPORTER_OTLP_ENDPOINT).
tracer = trace.get_tracer("lap.http")
_propagator = TraceContextTextMapPropagator()
_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Anything else a client sends as a method is counted as "OTHER": labels must stay few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# `lap_jobs` counts with `list_jobs(limit=...)`: a bounded read at every scrape, so a value of
# JOB_COUNT_CAP means "at least that many".
JOB_COUNT_CAP = 1000
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "leased")


class Metrics:
    """The metrics of one app, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lap_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lap_http_request_duration_seconds",
            "Time from request to the end of the response (an SSE stream's whole life).",
            ["method", "route"],
            registry=self.registry,
        )
        self.sse_streams = Gauge("lap_sse_streams_open", "SSE responses streaming right now.", registry=self.registry)
        self.rate_limited = Counter(
            "lap_rate_limited_total",
            "Requests refused with 429, by kind of caller (master, key, ip).",
            ["kind"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "lap_jobs",
            f"Jobs in the store by status, counted at scrape time up to {JOB_COUNT_CAP}.",
            ["status"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    async def count_jobs(self, lap: Lap) -> None:
        """Read the job counts from the store (a store error leaves them out rather than stale)."""
        try:
            counts = {s: len(await lap.store.list_jobs(status=s, limit=JOB_COUNT_CAP)) for s in JOB_STATUSES}
        except Exception:
            log.warning("metrics.jobs_unavailable", exc_info=True)
            self.jobs.clear()
            return
        for status, count in counts.items():
            self.jobs.labels(status=status).set(count)


def metrics_route(lap: Lap, metrics: Metrics) -> HTTPRouteHandler:
    """Return the `/metrics` handler (Prometheus text format; master key only)."""
    metrics.registry.register(DecisionCollector(lap))
    metrics.registry.register(UsageCollector(lap))  # what this process's LLM proxy metered, per team

    @get("/metrics", include_in_schema=False)
    async def scrape(caller: NamedDependency[Principal]) -> Response[bytes]:
        if caller.team_id is not None:
            raise PermissionDeniedException("only the master key reads /metrics")
        await metrics.count_jobs(lap)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return scrape


def request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` if it is sane (it ends up in logs), else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _caller_fields(scope: Scope) -> dict[str, Any]:
    # The guard leaves the authenticated `Principal` in the scope's state: name it, never the key.
    principal = scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        return {}
    if principal.team_id is None:
        return {"admin": True}
    return {"team_id": principal.team_id, "key_prefix": principal.key_prefix}


def request_span(scope: Scope, method: str) -> AbstractContextManager[Span]:
    """Start the request's span (renamed after its route by `_describe`), as the current span.

    With no tracer provider installed (tracing off), a shared do-nothing context: the API's no-op
    spans cost more than this.
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return _NO_SPAN
    return tracer.start_as_current_span(method, _trace_context(scope), SpanKind.SERVER, record_exception=False)


def _trace_context(scope: Scope) -> Context | None:
    """The context of the client's W3C `traceparent`, if it sent one (the request's span joins its trace)."""
    for name, value in scope["headers"]:
        if name == b"traceparent":
            return _propagator.extract({"traceparent": value.decode("latin-1")})
    return None


def _describe(span: Span, scope: Scope, method: str, template: str | None, status: int, fields: dict[str, Any]) -> None:
    """Name the request's span after its route and give it the request's attributes."""
    if template:
        span.update_name(f"{method} {template}")
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "http.route": template or UNMATCHED_ROUTE,
        "http.response.status_code": status,
        "lap.request.id": fields["request_id"],
    }
    if "team_id" in fields:
        attributes["lap.team.id"] = fields["team_id"]
    session_id = scope.get("path_params", {}).get("session_id")
    if isinstance(session_id, str):
        attributes["lap.session.id"] = session_id
    span.set_attributes(attributes)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


class RequestObserver:
    """Pure ASGI middleware: request id (bound in structlog's contextvars), access log and metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        method = scope["method"]
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500
        streaming = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                streaming = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in headers
                )
                if streaming:
                    self.metrics.sse_streams.inc()
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with (
            request_span(scope, method) as span,
            structlog.contextvars.bound_contextvars(request_id=rid, method=method, path=scope["path"]),
        ):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if streaming:
                    self.metrics.sse_streams.dec()
                elapsed = time.perf_counter() - started
                template: str | None = scope.get("path_template")  # set by Litestar's router on a match
                route = template or UNMATCHED_ROUTE
                label = method if method in _METHODS else "OTHER"
                self.metrics.requests.labels(method=label, route=route, status=str(status)).inc()
                self.metrics.duration.labels(method=label, route=route).observe(elapsed)
                fields = {
                    "request_id": rid,
                    "method": method,
                    "route": template or scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    **_caller_fields(scope),
                }
                if span.is_recording():
                    _describe(span, scope, method, template, status, fields)
                if status >= 500:
                    log.error("http.request", **fields)
                else:
                    log.info("http.request", **fields)
