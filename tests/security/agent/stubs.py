"""Finding 2 and 8: what the sandbox's stub key opens. The LLM API only, the agent's own model only, this session's
own stub only; and the proxy's socket only through the sandbox's forwarder."""

import json

from kit import PARAMS, STUB, auth_headers, chat_body, emit, http, json_error, loot, short, unix_sockets

NONCE = PARAMS["nonce"]
JSON = ("Content-Type", "application/json")


def call(method, target, key=STUB, body=b"", how="bearer", address=None):
    headers = [*auth_headers(key, how), JSON] if key is not None else [JSON]
    return http(method, target, headers, body, **({"address": address} if address else {}))


def messages_body(model="fake-model", text="hello"):
    return json.dumps({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}).encode()


def responses_body(model="fake-model", text="hello"):
    return json.dumps({"model": model, "input": text}).encode()


ALLOWED = {
    "chat_completions": [("POST", path, chat_body()) for path in ("/v1/chat/completions", "/chat/completions")],
    "responses": [("POST", path, responses_body()) for path in ("/v1/responses", "/responses")],
    "messages": [("POST", path, messages_body()) for path in ("/v1/messages?beta=true", "/v1/messages", "/messages")],
    "count_tokens": [("POST", "/v1/messages/count_tokens?beta=true", messages_body())],
    "models": [("GET", "/v1/models", b""), ("GET", "/models", b"")],
}
for name, requests in ALLOWED.items():
    answers = [(target, *call(method, target, body=body)[:2]) for method, target, body in requests]
    # The proxy must let each by; the gateway answers the /v1 forms (LiteLLM has no unprefixed /messages).
    ok = [status not in (401, 403) and (status == 200 or not target.startswith("/v1")) for target, status, _ in answers]
    detail = "; ".join(f"{target} {status} {short(body, 80)}" for target, status, body in answers)
    emit(f"stub_opens_{name}", all(ok), detail)

FORBIDDEN = {
    "key_generate": ("POST", "/key/generate", b"{}"),
    "user_new": ("POST", "/user/new", b"{}"),
    "model_new": ("POST", "/model/new", b'{"model_name": "x", "litellm_params": {"model": "openai/x"}}'),
    "config_update": ("POST", "/config/update", b"{}"),
    "spend_logs": ("GET", "/spend/logs", b""),
    "health": ("GET", "/health", b""),
    "metrics": ("GET", "/metrics", b""),
    "root": ("GET", "/", b""),
}
for name, (method, target, body) in FORBIDDEN.items():
    answers = [call(method, target, body=body, how=how) for how in ("x-api-key", "bearer")]
    held = all(status == 403 and json_error(answer) is not None for status, answer, _ in answers)
    detail = "; ".join(f"{status} {short(answer, 100)} {error}" for status, answer, error in answers)
    emit(f"stub_refused_on_{name}", held, f"{method} {target}: {detail}")

other_model = [
    call("POST", "/v1/chat/completions", body=chat_body("claude-fake", f"{NONCE} other-model chat")),
    call("POST", "/v1/messages", body=messages_body("claude-fake", f"{NONCE} other-model messages")),
]
emit(
    "stub_refused_for_other_model",
    all(status == 403 and json_error(body) for status, body, _ in other_model),
    "; ".join(f"{status} {short(body, 100)}" for status, body, _ in other_model),
)

FOREIGN = loot("foreign-stubs.json", {})
for name in ("live_same_team", "live_other_team", "deleted_session"):
    key = FOREIGN.get(name)
    if not key:
        emit(f"foreign_stub_refused_{name}", False, "the test dropped no such stub")
        continue
    status, body, error = call("POST", "/v1/chat/completions", key=key, body=chat_body(text=f"{NONCE} foreign {name}"))
    emit(f"foreign_stub_refused_{name}", status == 403 and json_error(body), f"{status} {short(body)} {error}")

answers = [call("POST", "/v1/chat/completions", key=None, body=chat_body(text=f"{NONCE} no key"))]
emit("no_key_is_401", all(s == 401 for s, _, _ in answers), "; ".join(f"{s} {short(b, 80)}" for s, b, _ in answers))
garbage = ["lapsk.garbage.key", "sk-garbage", "lapsk..", "Bearer", STUB[:-1] + ("A" if STUB[-1:] != "A" else "B")]
answers = [call("POST", "/v1/chat/completions", key=k, body=chat_body(text=f"{NONCE} garbage")) for k in garbage]
emit("garbage_key_is_401", all(s == 401 for s, _, _ in answers), " ".join(str(s) for s, _, _ in answers))

# Requests that might make the proxy fail (and log what it holds): junk, oversized heads, broken framing,
# keys that look real. Each must be refused (4xx or a closed connection), never a 5xx; then the proxy still serves.
real_looking = "sk-litellm-master-test"
junk = [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET /v1/models\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"A" * 200_000 + b"\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(2000)) + b"\r\n",
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {real_looking}\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: {real_looking}\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer lapk_0123456789ab_{'x' * 43}\r\n\r\n".encode(),
    f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {STUB}\r\n"
    "Content-Length: 10\r\nContent-Length: 99\r\n\r\n{}".encode(),
    f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {STUB}\r\n"
    "Content-Type: application/json\r\nContent-Length: 9\r\n\r\n\xff\xfe{[[[[[\x00".encode("latin-1"),
]
statuses = [http(raw=raw, timeout=3)[0] for raw in junk]
after = call("GET", "/v1/models")[0]
held = all(s is None or 400 <= s < 500 for s in statuses) and after == 200
emit("proxy_refuses_garbage_and_keeps_serving", held, f"answers {statuses}; then /v1/models {after}")

# Finding 8: the proxy's own socket, reached directly rather than through the sandbox's forwarder.
direct = []
for path in unix_sockets():
    if path.startswith("/run/lap-vault") or "llm" in path or "vault" in path:
        status, body, error = call(
            "POST", "/v1/chat/completions", body=chat_body(text=f"{NONCE} direct {path}"), address=path
        )
        direct.append((path, status, short(body, 80) or error))
# The host also checks that none of these reached the model (the fake LLM's request log).
emit(
    "vault_socket_refuses_direct_connections",
    all(s != 200 for _, s, _ in direct),
    str(direct) if direct else "no vault socket visible",
    sockets=[p for p, _, _ in direct],
)
