"""The leak suite's platform (started once for the package) and its count of probes tried and held.

Every test in tests/security is a probe: it passes when the boundary held. At the end of the run the suite prints
`leak suite: N probes, M held` and the probes that did not hold.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.fixtures import PG_ADMIN, require
from tests.security.platform import SESSIONS, Platform
from tests.security.runner import FIGURES, run_everywhere, write_marker

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from _pytest.reports import TestReport
    from _pytest.terminal import TerminalReporter

PROBES: dict[str, bool] = {}
"""Each probe tried (its test's id) and whether it held."""


async def _postgres_answers() -> bool:
    try:
        connection = await asyncpg.connect(f"{PG_ADMIN}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@pytest.fixture(scope="package")
def platform(harness_root: Path) -> Iterator[Platform]:
    """The running platform with both teams, their sessions (each after a first turn, with a marker file), one
    session deleted and one restarted."""
    require(shutil.which("bwrap") is not None, "bubblewrap (apt-get install bubblewrap)")
    require(asyncio.run(_postgres_answers()), f"PostgreSQL at {PG_ADMIN}")
    platform = Platform()
    try:
        platform.start()
        platform.setup()
        # One sandbox first: two LAP processes bringing up a data directory's first sandboxes at once race to copy
        # sandboxd's runtime into it (lap-local's `Runtime.path`: "File exists"), and one of those turns fails.
        first = run_everywhere(platform, ["a1"], "noop")
        first |= run_everywhere(platform, [key for key in SESSIONS if key != "a1"], "noop")
        for key, run in first.items():
            assert run.result("turn_ran")["has_stub"], f"{key}: no stub key in the sandbox"
            write_marker(platform, key)
        deleted = platform.sessions["a_deleted"]
        assert platform.api("a", "DELETE", f"/api/sessions/{deleted.id}").status_code == 204
        deleted.deleted = True
        restarted = platform.sessions["a_restarted"]
        assert platform.api("a", "POST", f"/api/sessions/{restarted.id}/restart").status_code == 202
        platform.wait_status("a_restarted", "ready")
        yield platform
    finally:
        platform.close()


def pytest_runtest_logreport(report: TestReport) -> None:
    """Count the probes: a test of this package that ran (or whose set-up failed) was tried; one that passed held."""
    if not report.nodeid.startswith("tests/security/"):
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        PROBES[report.nodeid] = report.passed


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not PROBES:
        return
    terminalreporter.section("leak suite")
    for figure in FIGURES:
        terminalreporter.write_line(figure)
    for nodeid, held in PROBES.items():
        if not held:
            terminalreporter.write_line(f"did not hold: {nodeid.removeprefix('tests/security/')}")
    terminalreporter.write_line(f"leak suite: {len(PROBES)} probes, {sum(PROBES.values())} held")
