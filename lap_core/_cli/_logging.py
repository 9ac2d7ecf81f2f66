"""structlog set-up for LAP's entry points (never at import: embedders configure their own)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(*, level: int = logging.WARNING, json: bool = False) -> None:
    """Log to stderr: JSON lines in production, readable in a terminal."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries' own request logs (httpx logs every request at INFO) only when asked for.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
