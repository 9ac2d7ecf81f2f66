"""A configuration error says what is wrong, by variable, and where every variable is documented."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.fixtures import lap_env

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("command", "env", "variable"),
    [
        (["agents", "list"], {"LAP_TURN_TIMEOUT": "soon"}, "LAP_TURN_TIMEOUT"),
        (["serve", "--no-worker"], {}, "MASTER_KEY"),
    ],
)
def test_a_configuration_error_points_at_docs_configuration(
    data_dir: Path, command: list[str], env: dict[str, str], variable: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lap_core", *command], env=lap_env(data_dir, **env), capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr
    assert variable in result.stderr
    assert "docs/configuration.md" in result.stderr
    assert "Traceback" not in result.stderr
