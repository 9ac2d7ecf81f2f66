"""structlog set-up for LAP's entry points (never at import: embedders configure their own or call
`configure_logging`).

Every line, LAP's own and the standard library's (Litestar, uvicorn, httpx, asyncpg, piccolo log
through `logging`), goes through one pipeline that masks secrets (`lap_core._redact`), in both
formats and at every level. Tracebacks are plain: never a frame's locals, which hold keys and
headers (issue 12, finding 3; structlog's console default is rich's traceback *with* locals).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import structlog

from lap_core._redact import mask_credentials, redact_text

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from structlog.typing import Processor

# Libraries whose debug lines are too many to read (aiosqlite: one per statement, with its arguments).
_QUIET_BELOW_INFO = ("aiosqlite",)


class RedactedRenderer:
    """Render a line with `renderer`, then mask every secret left in the text (exceptions included)."""

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        rendered = self.renderer(logger, method, event)
        assert isinstance(rendered, str), "LAP's renderers render text"
        return redact_text(rendered)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever `sys.stderr` is when a record comes (as `logging.lastResort` does)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _renderer(json: bool) -> Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback)


def configure_logging(*, level: int | str | None = None, json: bool | None = None) -> None:
    """Send LAP's log lines, and the standard library's, to stderr with every secret masked.

    JSON lines (`json=True`, for production) or lines for a terminal, from `level` up (a
    `logging` level or its name, e.g. "info"). None reads `LAP_LOG_LEVEL` (default warning) and
    `LAP_LOG_JSON`, as the `lap` command does. Entry points call it (the `lap` command, the ASGI
    factory `lap_server:app_factory`); a service embedding LAP may call it or set up its own.
    Uvicorn's loggers are routed through it too, so that its lines are masked as well.
    """
    if level is None:
        level = os.environ.get("LAP_LOG_LEVEL", "warning")
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    if json is None:
        json = os.environ.get("LAP_LOG_JSON", "").lower() in ("1", "true", "yes", "on")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exceptions = structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer()
    render = RedactedRenderer(_renderer(json))
    structlog.configure(
        processors=[*shared, exceptions, mask_credentials, render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The standard library's records: one handler on the root logger, rendered by the same pipeline.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, exceptions],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, mask_credentials, render],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    # Libraries' own request logs (httpx logs every request at INFO) only when asked for.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    # An ASGI server's own handlers (uvicorn's dictConfig) would print its lines unmasked.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
