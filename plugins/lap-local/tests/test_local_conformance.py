"""The sandbox backend conformance suite on real bubblewrap sandboxes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lap_core import Lap
from lap_core.testing import BackendConformance
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from lap_core import SandboxBackend

pytestmark = pytest.mark.bwrap


class TestLocalBackendConformance(BackendConformance):
    @pytest.fixture
    async def backend(self, data_dir: Path, bwrap: None) -> AsyncIterator[SandboxBackend]:
        env = lap_env(data_dir, LITELLM_API_BASE="http://127.0.0.1:9", LITELLM_API_KEY="k")
        async with Lap(env=env) as lap:  # with its LLM proxy: sandboxes mount its socket
            yield lap.backend
