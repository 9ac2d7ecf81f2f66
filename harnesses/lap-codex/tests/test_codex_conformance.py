"""The harness conformance suite for `codex` (see `tests/harness_conformance.py`)."""

from tests.harness_conformance import FakeGatewayConformance


class TestCodexConformance(FakeGatewayConformance):
    harness = "codex"
