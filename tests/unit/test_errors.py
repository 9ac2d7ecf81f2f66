"""LAP's errors: one tree under `LapError`, each with a stable code."""

from __future__ import annotations

import pytest

from lap_core import Error, LapError, SandboxdError, SandboxError
from lap_core._cli import run
from lap_core._engine.turns import error_event


def test_sandboxd_errors_are_lap_errors_with_a_stable_code() -> None:
    error = SandboxdError(503, "busy")
    assert isinstance(error, LapError)
    assert not isinstance(error, SandboxError)  # a backend's failure is another matter (the engine retries it)
    assert error.code == "sandboxd_error"
    assert (error.status, error.message, str(error)) == (503, "busy", "busy (HTTP 503)")
    assert str(SandboxdError(0, "cannot reach sandboxd")) == "cannot reach sandboxd"


def test_a_turn_failed_by_sandboxd_tells_its_user_as_before() -> None:
    assert error_event(SandboxdError(500, "boom")) == Error(code="sandbox_error", message="sandboxd: boom (HTTP 500)")


def test_the_command_line_shows_a_sandboxd_error_as_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    async def fails() -> None:
        raise SandboxdError(0, "cannot reach sandboxd: ConnectError")

    with pytest.raises(SystemExit) as exited:
        run(fails)
    assert exited.value.code == 1
    assert capsys.readouterr().err == "error: cannot reach sandboxd: ConnectError\n"
