"""The `lap` command line, run as a user runs it: clear messages, exit codes, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.fakes.litellm import free_port
from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path


def lap(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "lap_core", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    return lap_env(data_dir)


def test_agents_lifecycle_and_bad_input(env: dict[str, str]) -> None:
    created = lap(
        env, "agents", "create", "--name", "demo", "--harness", "opencode", "--model", "m1", "--on-busy", "reject"
    )
    assert created.returncode == 0, created.stderr
    assert "created agent demo" in created.stdout
    listed = lap(env, "agents", "list")
    assert "demo" in listed.stdout
    assert "opencode" in listed.stdout
    shown = lap(env, "agents", "show", "demo").stdout
    assert "m1" in shown
    assert "reject" in shown
    bad_policy = lap(env, "agents", "create", "--name", "y", "--harness", "opencode", "--model", "m", "--on-busy", "x")
    assert bad_policy.returncode == 2
    assert "enqueue" in bad_policy.stderr
    missing_session = lap(env, "sessions", "restart", "ses_missing")
    assert missing_session.returncode == 1
    assert "ses_missing" in missing_session.stderr

    unknown = lap(env, "agents", "create", "--name", "x", "--harness", "nope", "--model", "m")
    assert unknown.returncode == 1
    assert "unknown harness 'nope'" in unknown.stderr
    assert "opencode" in unknown.stderr
    duplicate = lap(env, "agents", "create", "--name", "demo", "--harness", "opencode", "--model", "m")
    assert duplicate.returncode == 1
    assert "demo" in duplicate.stderr
    missing = lap(env, "agents", "show", "ghost")
    assert missing.returncode == 1
    assert "ghost" in missing.stderr

    assert lap(env, "agents", "delete", "demo").returncode == 0
    assert "no agents yet" in lap(env, "agents", "list").stdout


def test_an_agents_egress_and_repository(env: dict[str, str]) -> None:
    args = ["agents", "create", "--name", "dev", "--harness", "opencode", "--model", "m", "--preset", "developer"]
    args += ["--allow", "git.example.com", "--deny", "gist.github.com", "--repo", "https://git.example.com/a.git"]
    created = lap(env, *args, "--branch", "main")
    assert created.returncode == 0, created.stderr
    shown = lap(env, "agents", "show", "dev").stdout
    assert "git.example.com" in shown
    assert "pypi.org" in shown  # the preset, spelled out
    assert "gist.github.com" in shown
    assert "https://git.example.com/a.git" in shown
    bad = lap(env, "agents", "create", "--name", "x", "--harness", "opencode", "--model", "m", "--allow", "a b")
    assert bad.returncode == 1
    assert "'a b'" in bad.stderr
    assert "egress" in bad.stderr
    secretive = lap(
        env, "agents", "create", "--name", "y", "--harness", "opencode", "--model", "m", "--repo", "https://u:p@h/r"
    )
    assert secretive.returncode == 1
    assert "repo_url" in secretive.stderr


def test_secrets_lifecycle_reads_the_value_from_stdin_only(env: dict[str, str], data_dir: Path) -> None:
    value = "ghp_cli-value-0123456789-never-echoed"
    created = lap(env, "secrets", "create", "GH_TOKEN", "--host", "github.com", "--host", "*.github.com", stdin=value)
    assert created.returncode == 0, created.stderr
    assert "created secret GH_TOKEN" in created.stdout
    assert "github.com, *.github.com" in created.stdout
    assert lap(env, "agents", "create", "--name", "demo", "--harness", "opencode", "--model", "m").returncode == 0
    own = lap(env, "secrets", "create", "GH_TOKEN", "--host", "x.test", "--agent", "demo", stdin="agent-own-value\n")
    assert own.returncode == 0, own.stderr
    listed = lap(env, "secrets", "list")
    assert listed.stdout.count("GH_TOKEN") == 2
    stored = b"".join(path.read_bytes() for path in data_dir.glob("lap.db*"))  # the file and its WAL
    for text in (created.stdout + created.stderr + listed.stdout, stored.decode("latin-1")):
        assert value not in text
        assert "agent-own-value" not in text
    assert len(lap(env, "secrets", "list", "--agent", "demo").stdout.splitlines()) == 1  # its own shadows the team's
    reserved = lap(env, "secrets", "create", "PATH", "--host", "a.test", stdin="v")
    assert reserved.returncode == 1
    assert "PATH is reserved" in reserved.stderr
    empty = lap(env, "secrets", "create", "EMPTY", "--host", "a.test")
    assert empty.returncode == 1
    assert "value: must not be empty" in empty.stderr
    assert lap(env, "secrets", "delete", "GH_TOKEN", "--agent", "demo").returncode == 0
    assert "x.test" not in lap(env, "secrets", "list").stdout
    assert lap(env, "secrets", "delete", "GH_TOKEN").returncode == 0
    assert "no secrets yet" in lap(env, "secrets", "list").stdout
    missing = lap(env, "secrets", "delete", "GH_TOKEN")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_configuration_errors_list_every_key(env: dict[str, str]) -> None:
    result = lap({**env, "LAP_TURN_TIMEOUT": "soon", "LAP_SANDBOX_PIDS": "2"}, "agents", "list")
    assert result.returncode == 1
    assert "LAP_TURN_TIMEOUT" in result.stderr
    assert "LAP_SANDBOX_PIDS" in result.stderr
    chat = lap(env, "chat", "-m", "hi")
    assert chat.returncode == 1
    assert "LITELLM_API_BASE" in chat.stderr
    assert "LITELLM_API_KEY" in chat.stderr


def test_chat_with_a_missing_agent_says_so(env: dict[str, str]) -> None:
    result = lap({**env, "LITELLM_API_BASE": "http://127.0.0.1:9", "LITELLM_API_KEY": "k"}, "chat", "ghost", "-m", "hi")
    assert result.returncode == 1
    assert "ghost" in result.stderr


def test_doctor_says_what_is_missing(env: dict[str, str]) -> None:
    result = lap(env, "doctor")
    assert result.returncode == 1  # no gateway configured here
    assert "✓ store" in result.stdout
    assert "✗ gateway" in result.stdout
    assert "fix: export LITELLM_API_BASE" in result.stdout
    assert "bwrap" in result.stdout


def test_plugins_lists_the_bundled_plugins(env: dict[str, str]) -> None:
    out = lap(env, "plugins").stdout
    bundled = (
        "lap-local",
        "lap-sql",
        "lap-opencode",
        "lap-claude-code",
        "lap-codex",
        "backends: kubernetes, local",
        "stores: sql",
    )
    for name in (*bundled, "harnesses: claude-code, codex, opencode"):
        assert name in out


@pytest.mark.postgres
def test_postgres_needs_lap_migrate_first(env: dict[str, str], pg_database: str) -> None:
    env = {**env, "DATABASE_URL": pg_database}
    before = lap(env, "agents", "list")
    assert before.returncode == 1
    assert "lap migrate" in before.stderr
    first = lap(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    assert "0001_initial" in first.stdout
    assert lap(env, "migrate").stdout.strip() == "database up to date"
    assert lap(env, "agents", "create", "--name", "pg", "--harness", "opencode", "--model", "m").returncode == 0
    assert "pg" in lap(env, "agents", "list").stdout


def test_a_worker_serves_its_metrics_and_stops_on_sigterm(env: dict[str, str]) -> None:
    port = free_port()
    worker_env = env | {"LITELLM_API_BASE": "http://127.0.0.1:9", "LITELLM_API_KEY": "k", "LAP_METRICS_PORT": str(port)}
    with subprocess.Popen(
        [sys.executable, "-m", "lap_core", "worker"], env=worker_env, stderr=subprocess.PIPE, text=True
    ) as worker:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                    break
                except httpx.TransportError:
                    assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                    assert time.monotonic() < deadline, "the worker's metrics never came up"
                    time.sleep(0.1)
            assert "# HELP lap_reconciler_decisions_total " in metrics
            assert "process_cpu_seconds_total" in metrics
        finally:
            worker.send_signal(signal.SIGTERM)
            _, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, errors
    assert "worker stopped" in errors
    assert "Traceback" not in errors


@pytest.mark.parametrize("command", [["worker"], ["serve"]])
def test_a_server_stopped_while_it_starts_exits_cleanly(env: dict[str, str], command: list[str]) -> None:
    # A supervisor may stop a process it has just started: at any point of the start (imports, the
    # store's opening, the proxy's), SIGTERM ends it with 0 and no traceback, never by the signal.
    server_env = env | {"LITELLM_API_BASE": "http://127.0.0.1:9", "LITELLM_API_KEY": "k"}
    server_env |= {"LAP_PORT": str(free_port()), "MASTER_KEY": "lap_test_master_key_0123456789"}
    for delay in (0.1, 0.3, 0.6, 1.0, 1.5):
        with subprocess.Popen(
            [sys.executable, "-m", "lap_core", *command], env=server_env, stderr=subprocess.PIPE, text=True
        ) as process:
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            _, errors = process.communicate(timeout=30)
        assert process.returncode == 0, f"{command} after {delay} s: {process.returncode}\n{errors}"
        assert "Traceback" not in errors


def test_serve_with_a_bad_configuration_says_what_is_wrong(env: dict[str, str]) -> None:
    result = lap({k: v for k, v in env.items() if k != "MASTER_KEY"}, "serve")
    assert result.returncode == 1
    assert "MASTER_KEY" in result.stderr


def test_plugins_with_a_misspelled_plugin_name_says_so(env: dict[str, str]) -> None:
    result = lap({**env, "LAP_LOAD_PLUGINS": "lap-sqll"}, "plugins")
    assert result.returncode == 1
    assert "lap-sqll" in result.stderr
