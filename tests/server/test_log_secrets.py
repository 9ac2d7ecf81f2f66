"""No log line holds a secret (issue 12, finding 3): the real `lap serve`, driven through failures, at debug level.

The server runs as an operator runs it, with console lines and with JSON lines, and a plugin
(`tests.server.log_probe`) whose routes fail and log carelessly with the caller's key in hand. Every line
it writes, on stderr and stdout, is searched for the master key, the team keys, the gateway key,
the encryption key, secrets' values (stored, refused) and a sandbox's stub key.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
from typing import TYPE_CHECKING

import httpx
import pytest

from lap_core._vault.keys import StubKeys
from tests.server.process import serve_process

if TYPE_CHECKING:
    from pathlib import Path


def _proxy_request(socket_path: Path, request: bytes) -> bytes:
    """Send raw bytes to the LLM proxy's socket; return what it answers (it may just close)."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(socket_path))
        client.sendall(request)
        answer = b""
        try:
            while chunk := client.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def _drive(base: str, master: str, data_dir: Path) -> dict[str, str]:
    """Drive the server through failures with every kind of key; return the secrets that were in play."""
    admin = {"Authorization": f"Bearer {master}"}
    in_play = {"master key": master, "master key (Basic)": base64.b64encode(f"lap:{master}".encode()).decode()}
    with httpx.Client(base_url=base, timeout=30) as client:
        team_keys = []
        for name in ("ci", "deploy"):
            created = client.post("/api/keys", json={"name": name}, headers=admin)
            assert created.status_code == 201, created.text
            team_keys.append(created.json()["key"])
        for number, key in enumerate(team_keys):
            in_play[f"team key {number}"] = key
            in_play[f"team key {number} secret"] = key.split("_", 2)[2]
        for number, name in enumerate(("GH_TOKEN", "PATH", "1BAD")):  # stored, then refused with a 422 twice
            value = in_play[f"secret value {number}"] = f"ghp_{secrets.token_urlsafe(24)}"
            created = client.post(
                "/api/secrets", json={"name": name, "value": value, "hosts": ["a.test"]}, headers=admin
            )
            assert created.status_code == (201 if number == 0 else 422), created.text
        assert client.get("/api/secrets", headers=admin).status_code == 200
        callers = [admin, *({"Authorization": f"Bearer {key}"} for key in team_keys)]
        for headers in callers:
            probe_headers = {**headers, "Cookie": f"session={master}", "X-Api-Key": master}
            assert client.get("/probe/boom", headers=probe_headers).status_code == 500
            assert client.get("/probe/leak", headers=probe_headers).status_code == 500
            assert client.get("/probe/log", headers=probe_headers).status_code == 200
            # Bad bodies: not JSON, too deep, not UTF-8, holding the key.
            for body in (b"{not json " + master.encode(), b"[" * 5000 + b"]" * 5000, b'{"name": "\xff\xfe"}'):
                json_headers = {**headers, "Content-Type": "application/json"}
                assert client.post("/api/agents", content=body, headers=json_headers).status_code < 600
            assert client.post("/api/agents", json={"name": master}, headers=headers).status_code == 422
        bad_keys = [
            f"Bearer {master}x",
            f"Bearer {master[:-1]}",
            f"Basic {in_play['master key (Basic)']}",
            master,
            f"Bearer {team_keys[0][:-3]}abc",
            f"Bearer lapk_{team_keys[0].split('_')[1]}_{master}",
        ]
        for value in bad_keys:
            assert client.get("/api/agents", headers={"Authorization": value}).status_code == 401
        assert client.get("/api/agents", headers={"X-Api-Key": master}).status_code == 401
    # The LLM proxy, with a stub key, asked for a target it cannot forward (it holds the gateway key then).
    keys = StubKeys.from_file(data_dir / "secrets" / "vault.key")
    stub, identity = keys.issue("ses_probe", 1), keys.identity("ses_probe", 1)
    in_play["stub key"] = stub
    in_play["sandbox identity"] = identity
    for target in (b"http://[oops/v1/models", b"/v1/models"):
        _proxy_request(
            data_dir / "run" / "vault" / "llm.sock",
            b"LAP-SANDBOX " + identity.encode() + b"\r\n"
            b"GET " + target + b" HTTP/1.1\r\nHost: vault\r\nx-api-key: " + stub.encode() + b"\r\n"
            b"Authorization: Bearer " + stub.encode() + b"\r\nConnection: close\r\n\r\n",
        )
    return in_play


@pytest.mark.parametrize(
    ("json_lines", "asgi"),
    [(False, False), (True, False), (False, True)],
    ids=["console", "json", "uvicorn-factory"],
)
def test_no_log_line_holds_a_secret(data_dir: Path, tmp_path: Path, json_lines: bool, asgi: bool) -> None:
    master = f"master-{secrets.token_urlsafe(24)}"
    gateway = f"sk-gateway-{secrets.token_urlsafe(24)}"
    encryption_key = secrets.token_hex(32)
    env = {"LITELLM_API_KEY": gateway, "LAP_LOG_LEVEL": "debug", "ENCRYPTION_KEY": encryption_key}
    env |= {"LAP_LOG_JSON": "1"} if json_lines else {}
    plugins = {"log-probe": "tests.server.log_probe:plugin"}
    with serve_process(data_dir, tmp_path, master_key=master, plugins=plugins, env=env, asgi=asgi) as server:
        in_play = {
            **_drive(server.base_url, master, data_dir),
            "gateway key": gateway,
            "encryption key": encryption_key,
        }
    text = server.output()
    lines = text.splitlines()
    leaks = {name: len([line for line in lines if secret in line]) for name, secret in in_play.items()}
    assert {name: count for name, count in leaks.items() if count} == {}, text

    # The failures were logged (at every level, from structlog and the standard library), masked.
    assert text.count("request.failed") >= 6, text
    for logged in ("probe.headers", "probe.auth", "probe.text", "probe.failed", "library failed", "Traceback"):
        assert logged in text, f"{logged!r} not logged\n{text}"
    assert "***" in text
    if json_lines:
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert {r["level"] for r in records} >= {"debug", "info", "warning", "error"}
        assert "probe.library" in {r.get("logger") for r in records}  # the standard library's lines are JSON too
        assert [line for line in lines if not line.startswith(("{", "LAP "))] == []
