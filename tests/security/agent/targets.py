"""Finding 1: request targets that would lead the LLM proxy anywhere but the gateway, each with the stub in
`x-api-key` and in `Authorization: Bearer`. Every one must be a 400 with a JSON error."""

import subprocess

from kit import PARAMS, STUB, auth_headers, chat_body, emit, http, json_error, read, short

ECHO = f"{PARAMS['echo_host']}:{PARAMS['echo_port']}"
TARGETS = {
    "absolute_form": ("POST", f"http://{ECHO}/echo"),
    "authority_form": ("CONNECT", ECHO),
    "at_sign": ("POST", f"@{ECHO}/echo"),
    "double_slash": ("POST", f"//{ECHO}/echo"),
    "dot_segments": ("POST", "/v1/../key/generate"),
    "encoded_dot_segments": ("POST", "/v1/%2e%2e/key/generate"),
    "backslash": ("POST", f"/\\{ECHO}/echo"),
    "control_bytes": ("POST", "/v1/chat/completions\x01\x7f"),
}

for kind, (method, target) in TARGETS.items():
    for how in ("x-api-key", "bearer"):
        headers = [*auth_headers(STUB, how), ("Content-Type", "application/json")]
        status, body, error = http(method, target, headers, chat_body(text=f"{PARAMS['nonce']} {kind}"))
        held = status == 400 and json_error(body) is not None
        # The agent prints what came back, as it would: whatever the proxy echoed lands in the event log.
        answer = f"{status} {short(body, 1000)} {error}"
        emit(f"proxy_target_{kind}_{how.replace('-', '_')}", held, answer, status=status)

# The issue's own reproduction, with curl as an agent would send it.
curl = subprocess.run(
    [
        "curl",
        "-s",
        "-o",
        "/tmp/curl-body",
        "-w",
        "%{http_code}",
        "--max-time",
        "8",
        "http://127.0.0.1:4000",
        "--request-target",
        f"@{ECHO}/echo",
        "-H",
        f"x-api-key: {STUB}",
    ],
    capture_output=True,
    text=True,
    check=False,
)
body = read("/tmp/curl-body") or b""
emit("proxy_target_curl_reproduction", curl.stdout == "400", f"{curl.stdout} {short(body, 1000)}", status=curl.stdout)
