"""The harness conformance suite for `claude-code` (see `tests/harness_conformance.py`)."""

from tests.harness_conformance import FakeGatewayConformance


class TestClaudeCodeConformance(FakeGatewayConformance):
    harness = "claude-code"
    model = "claude-fake"  # served by LiteLLM's Anthropic provider: Messages end to end
