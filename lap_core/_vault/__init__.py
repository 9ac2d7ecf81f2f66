"""The vault: sandboxes get stub credentials; the platform swaps in the real ones on the way out."""

from lap_core._vault.keys import SandboxGrant, StubKeys
from lap_core._vault.metering import UsageCounters
from lap_core._vault.proxy import LLMProxy, LLMScope

__all__ = ["LLMProxy", "LLMScope", "SandboxGrant", "StubKeys", "UsageCounters"]
