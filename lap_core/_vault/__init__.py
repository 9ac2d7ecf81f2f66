"""The vault: sandboxes get stub credentials; the platform swaps in the real ones on the way out."""

from lap_core._vault.keys import StubKeys
from lap_core._vault.proxy import LLMProxy

__all__ = ["LLMProxy", "StubKeys"]
