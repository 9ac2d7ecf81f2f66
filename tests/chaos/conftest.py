"""The chaos suite's private PostgreSQL server, and its figures at the end of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.chaos.postgres import PrivatePostgres, postgres_bin
from tests.fixtures import require

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _pytest.terminal import TerminalReporter


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the chaos suite's own (restarted by its faults), for the whole run."""
    bin_dir = postgres_bin()
    require(bin_dir is not None, "PostgreSQL's server programs, /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    assert bin_dir is not None
    server = PrivatePostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    from tests.chaos.checks import RESULTS, Figures

    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos figures")
    write(Figures.HEADER)
    total = Figures("all")
    for figures in RESULTS.values():
        write(figures.row())
        for name in ("faults", "turns", "interrupted", "resumed", "restarted", "lost", "duplicated", "failed"):
            setattr(total, name, getattr(total, name) + getattr(figures, name))
        for name in ("context", "cut", "unexpected_exits", "tracebacks", "library_tracebacks", "reconnects", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(figures, name))
        total.recovery += figures.recovery
    write(total.row())
    for f in RESULTS.values():
        write(
            f"{f.kind}: {f.post_retries} POSTs retried (no answer: the client read the history first),"
            f" {f.not_interrupted} hit turns ended before the fault reached them,"
            f" {f.refused_starts} restarted processes refused to start (database down; exit 1, restarted again),"
            f" {f.library_tracebacks} asyncpg pool warnings with a traceback (database down; not counted above)"
            + (
                f"; {f.model_turns} model turns made {f.model_calls} model calls, {f.spared} model streams of"
                " other workers' turns in flight at a fault went on whole"
                if f.model_turns
                else ""
            )
        )
    for figures in RESULTS.values():
        for problem in figures.problems[:10]:
            write(f"{figures.kind}: {problem}")
        if len(figures.problems) > 10:
            write(f"{figures.kind}: ... and {len(figures.problems) - 10} more problems")
