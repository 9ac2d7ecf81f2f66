"""What every conformance suite shares: the asyncio backend and the `store` fixture to override."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lap_core.store import SessionStore


class StoreSuite:
    """Base of the store conformance suites; a subclass provides the `store` fixture."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run on asyncio (piccolo, asyncpg and friends need it)."""
        return "asyncio"

    @pytest.fixture
    def store(self) -> SessionStore:
        """Yield an open, migrated, empty store: override this in your subclass."""
        raise NotImplementedError(f"subclass {type(self).__name__} and override the `store` fixture")
