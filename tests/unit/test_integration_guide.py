"""The plugin guide's integration example runs as written and prints the events it is delivered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _example() -> str:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    section = guide.split("\n## Integrations\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.mark.anyio
async def test_the_print_events_example_prints_each_delivery(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(data_dir)
    for key, value in {
        "LAP_DATA_DIR": str(data_dir),
        "LITELLM_API_BASE": "http://127.0.0.1:9",
        "LITELLM_API_KEY": "k",
    }.items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, Any] = {"__name__": "print_events"}
    exec(compile(_example(), "print_events.py", "exec"), namespace)
    await namespace["main"]()
    printed = capsys.readouterr().out
    assert re.search(r"^print:ses_\S+:1 Status$", printed, re.MULTILINE), printed
