"""An ordinary turn's tool call: proves the session works (and, through the kit, records its stub)."""

from kit import STUB, emit

emit("turn_ran", True, "a stub was found" if STUB else "no stub found in the sandbox", has_stub=bool(STUB))
