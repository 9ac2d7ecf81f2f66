"""OpenTelemetry: one trace per turn, exported over OTLP/HTTP to a real receiver (tests/fakes/otlp.py).

Through the real `lap serve` (and a cluster of real processes for a worker killed mid-turn):
the API request, the queue, the worker's turn, sandbox bring-up, the harness and each model
call through the LLM proxy are spans of one trace, and the gateway got the model call's
`traceparent`. Without `OTEL_EXPORTER_OTLP_ENDPOINT`, no exporter exists.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from lap_sql import SqlStore
from tests.cluster import api_client, cluster_env, running_cluster
from tests.fakes.llm_server import FakeLLM
from tests.fakes.otlp import OTLPReceiver, ReceivedSpan
from tests.server.process import serve_process

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP's span kinds
# Spans leave each process a tenth of a second after they end (the SDK's batch delay, a standard variable).
OTEL_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    otlp = OTLPReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    fake = FakeLLM().start()
    yield fake
    fake.stop()


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    (found,) = [span for span in spans if span.name == name]
    return found


def _has(*names: str) -> object:
    return lambda spans: all(any(span.name == name for span in spans) for name in names)


def test_a_turn_through_lap_serve_is_one_trace_down_to_the_model_call(
    data_dir: Path, tmp_path: Path, receiver: OTLPReceiver, llm: FakeLLM
) -> None:
    env = {"LITELLM_API_BASE": llm.url, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **OTEL_ENV}
    with serve_process(data_dir, tmp_path, master_key="otel-master-key", env=env) as server:
        headers = {"Authorization": f"Bearer {server.master_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as api:
            agent = api.post("/api/agents", json={"name": "traced", "harness": "script", "model": "m1"})
            assert agent.status_code == 201, agent.text
            session = api.post("/api/sessions", json={"agent_id": "traced"}).json()["id"]
            done = api.post(f"/api/sessions/{session}/messages?wait=true", json={"text": "model: t1"})
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "completed", done.json()
        names = ("lap.send_message", "lap.turn", "lap.sandbox.bring_up", "lap.harness", "lap.llm.call")
        spans = receiver.wait_for(_has(*names, "POST /api/sessions/{session_id}/messages"))

    request = _one(spans, "POST /api/sessions/{session_id}/messages")
    trace = [span for span in spans if span.trace_id == request.trace_id]
    send, turn, bring_up, harness, call = (_one(trace, name) for name in names)
    # One trace, each span the child of the one before it.
    assert (request.kind, request.parent_id) == (SERVER, "")
    assert request.attributes["http.response.status_code"] == 200
    assert send.parent_id == request.span_id
    assert (turn.parent_id, turn.kind) == (send.span_id, CONSUMER)
    assert bring_up.parent_id == turn.span_id
    assert bring_up.attributes["lap.sandbox.created"] is True
    assert harness.parent_id == turn.span_id
    assert (call.parent_id, call.kind) == (harness.span_id, CLIENT)
    agent_id = agent.json()["id"]
    assert request.attributes["lap.session.id"] == session
    assert "lap.team.id" not in request.attributes  # the master key's request: a team key's names its team
    for span in (send, turn, bring_up, harness, call):
        assert span.attributes["lap.session.id"] == session, span
        assert span.attributes["lap.team.id"] == "team_default", span
        assert span.attributes["lap.agent.id"] == agent_id, span
    for span in (turn, harness):
        assert (span.attributes["lap.harness"], span.attributes["lap.model"]) == ("script", "m1")
    assert turn.attributes["lap.turn.resumed"] is False
    assert call.attributes["lap.model"] == "m1"
    # The fake's default usage, as the proxy metered it.
    assert (call.attributes["gen_ai.usage.input_tokens"], call.attributes["gen_ai.usage.output_tokens"]) == (12, 7)
    assert call.resource["service.name"] == "lap"
    # The gateway got the model call's span as its parent: its own spans would join the trace.
    (model_request,) = llm.requests()
    assert model_request["traceparent"].startswith(f"00-{call.trace_id}-{call.span_id}-")


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_turn_resumed_after_its_worker_was_killed_stays_in_its_trace(
    data_dir: Path, pg_database: str, tmp_path: Path, receiver: OTLPReceiver
) -> None:
    lease = 3
    env = cluster_env(
        data_dir,
        pg_database,
        tmp_path / "entry-point",
        LAP_JOB_LEASE=str(lease),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        **OTEL_ENV,
    )
    with running_cluster(data_dir, env, tmp_path / "logs") as cluster:
        async with api_client(cluster) as api:
            agent = await api.post("/api/agents", json={"name": "traced", "harness": "script", "model": "m"})
            assert agent.status_code == 201, agent.text
            session = (await api.post("/api/sessions", json={"agent_id": "traced"})).json()["id"]
            message = cluster.command("v0", f"sleep {lease * 3}; echo v0")  # outlasts the kill and the lease
            sent = await api.post(f"/api/sessions/{session}/messages", json={"text": message})
            assert sent.status_code == 202, sent.text
            turn_id = sent.json()["turn_id"]
            async with SqlStore(pg_database) as store:
                (job,) = [job for job in await store.list_jobs(limit=10) if job.payload["turn_id"] == turn_id]
                assert job.payload["traceparent"], job  # the trace rides in the queue
                deadline = time.monotonic() + 20
                while not cluster.executions("v0") or job.leased_by is None:
                    assert time.monotonic() < deadline, f"the turn did not start\n{cluster.log_text()}"
                    await anyio.sleep(0.05)
                    job = await store.get_job(job.id)
            victim = cluster.worker_of(job)
            victim_pid = cluster.processes[victim].pid
            # The victim's bring-up span has left it before it dies.
            receiver.wait_for(
                lambda spans: any(
                    s.name == "lap.sandbox.bring_up" and s.resource["process.pid"] == victim_pid for s in spans
                )
            )
            cluster.kill(victim)
            with anyio.fail_after(60):
                while not any(
                    r["turn_id"] == turn_id and r["event"]["type"] == "turn_end"
                    for r in (await api.get(f"/api/sessions/{session}/messages")).json()
                ):
                    await anyio.sleep(0.2)
        spans = receiver.wait_for(
            lambda spans: any(s.name == "lap.turn" and s.attributes["lap.turn.resumed"] for s in spans)
        )

    send = _one(spans, "lap.send_message")
    trace = [span for span in spans if span.trace_id == send.trace_id]
    resumed = _one(trace, "lap.turn")  # the victim's turn span never ended: it never left
    survivor_pid = resumed.resource["process.pid"]
    assert survivor_pid != victim_pid
    assert resumed.attributes["lap.turn.resumed"] is True
    assert resumed.attributes["lap.job.attempt"] == 2
    assert resumed.parent_id == send.span_id  # the same parent as the first attempt's
    bring_ups = {span.resource["process.pid"] for span in trace if span.name == "lap.sandbox.bring_up"}
    assert bring_ups == {victim_pid, survivor_pid}
    assert any(span.name == "lap.harness" and span.resource["process.pid"] == survivor_pid for span in trace)
    request = next(span for span in trace if span.kind == SERVER)
    assert send.parent_id == request.span_id


def test_without_the_endpoint_no_exporter_or_sdk_is_loaded() -> None:
    script = (
        "import os, sys\n"
        "from opentelemetry import trace\n"
        "from lap_core import _tracing\n"
        "os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None)\n"
        "assert _tracing.setup() is False\n"
        "with _tracing.tracer.start_as_current_span('x'):\n"
        "    assert _tracing.traceparent() is None\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))]\n"
        "assert not loaded, loaded\n"
        "os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'] = 'http://127.0.0.1:9'\n"
        "assert _tracing.setup() is True\n"
        "assert 'opentelemetry.exporter.otlp.proto.http.trace_exporter' in sys.modules\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
