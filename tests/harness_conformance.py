"""The harness conformance suite as LAP's own harnesses run it: the real CLI in a bwrap sandbox,
behind a real LiteLLM proxy in front of the scripted fake LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lap_core.testing import HarnessConformance

if TYPE_CHECKING:
    from lap_core import Lap
    from tests.fakes.llm_server import FakeLLM


@pytest.mark.e2e
@pytest.mark.bwrap
class FakeGatewayConformance(HarnessConformance):
    """`HarnessConformance` on `e2e_lap` and the fake LLM; a subclass names the harness (and model)."""

    @pytest.fixture
    def lap(self, e2e_lap: Lap) -> Lap:
        return e2e_lap

    @pytest.fixture
    def scripted_llm(self, llm: FakeLLM) -> FakeLLM:
        return llm
