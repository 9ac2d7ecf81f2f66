"""The harness conformance suite for `opencode` (see `tests/harness_conformance.py`)."""

from tests.harness_conformance import FakeGatewayConformance


class TestOpencodeConformance(FakeGatewayConformance):
    harness = "opencode"
