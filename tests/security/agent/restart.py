"""Finding 2: after `restart` (a new sandbox), the stub the session had before is refused; the new one works."""

from kit import LOOT, PARAMS, STUB, chat_body, emit, http, json_error, read, short

history = (read(f"{LOOT}/own-stubs") or b"").decode().split()
old = history[0] if history else ""
headers = [("Authorization", f"Bearer {old}"), ("Content-Type", "application/json")]
status, body, error = http("POST", "/v1/chat/completions", headers, chat_body(text=f"{PARAMS['nonce']} old stub"))
emit(
    "stub_before_restart_refused",
    bool(old) and status == 403 and json_error(body),
    f"{status} {short(body)} {error}",
    stubs_seen=len(history),
)
headers = [("Authorization", f"Bearer {STUB}"), ("Content-Type", "application/json")]
status, body, error = http("POST", "/v1/chat/completions", headers, chat_body(text="new stub"))
emit("stub_after_restart_works", status == 200, f"{status} {short(body, 80)} {error}")
