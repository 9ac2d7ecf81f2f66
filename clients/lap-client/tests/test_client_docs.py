"""The examples of docs/client.md run as they are against the real server (the scripted harness for opencode)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.server.process import ServeProcess

DOC = Path(__file__).resolve().parents[3] / "docs" / "client.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_guide_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_an_example_of_the_guide_runs(server: ServeProcess, code: str) -> None:
    env = {**os.environ, "LAP_SERVER_URL": server.base_url, "LAP_API_KEY": server.master_key}
    code = code.replace('harness="opencode"', 'harness="script"')
    ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    if "send_and_wait" in code and "docs-demo" in code:
        assert "completed you said: write hello.py" in ran.stdout
    if "docs-resume" in code:
        assert ran.stdout.split() == ["3", "[3]"]
