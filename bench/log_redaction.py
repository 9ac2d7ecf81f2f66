"""What masking secrets costs per log line (issue 12, finding 3): LAP's logging with and without redaction.

Run: `.venv/bin/python bench/log_redaction.py [--lines N] [--secrets K]`. LAP's logging is set up
as `lap -v` does (`lap_core.configure_logging`, JSON and console), writing to a null
file; the same lines are logged through it as configured (with redaction: `mask_credentials`
and `redact_text` on the rendered line) and through the same processors without the two. Lines:
the server's access line (`http.request`, the most frequent), a line with nested headers, an
error with a traceback, and a standard-library record (Litestar, uvicorn, httpx log that way).
With `--secrets K`, K secrets are registered (the runtime registers 3 to 6: the master, gateway
and encryption keys, the database password, variables named like secrets). Prints ns per line,
the best of 7 rounds (a shared machine's noise only adds).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lap_core import configure_logging as configure
from lap_core._logging import RedactedRenderer
from lap_core._redact import mask_credentials, redact_text, register_secret

ACCESS = {
    "request_id": "b2d6ff026cf8407b889bfab7a5fb31f6",
    "method": "POST",
    "route": "/api/sessions/{session_id}/messages",
    "status": 202,
    "duration_ms": 3.4,
    "team_id": "team_default",
    "key_prefix": "0123456789ab",
}
ROUNDS = 7
HEADERS = {"headers": {"authorization": "Bearer lapk_0123456789ab_secret", "accept": "*/*", "x-request-id": "r-1"}}


def _error() -> BaseException:
    try:
        raise RuntimeError("upstream refused the request: 502 Bad Gateway")
    except RuntimeError as error:
        return error


def _time(log_once: Any, lines: int) -> float:
    """ns per call of `log_once`, over `lines` calls."""
    started = time.perf_counter_ns()
    for _ in range(lines):
        log_once()
    return (time.perf_counter_ns() - started) / lines


def _without_redaction() -> None:
    """Reconfigure structlog and the root handler with the same processors, minus the redaction."""
    processors = [p for p in structlog.get_config()["processors"] if p is not mask_credentials]
    processors = [p.renderer if isinstance(p, RedactedRenderer) else p for p in processors]
    structlog.configure(processors=processors)
    formatter = logging.getLogger().handlers[0].formatter
    assert isinstance(formatter, structlog.stdlib.ProcessorFormatter)
    formatter.processors = [
        p.renderer if isinstance(p, RedactedRenderer) else p for p in formatter.processors if p is not mask_credentials
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--secrets", type=int, default=4)
    args = parser.parse_args()
    for _ in range(args.secrets):
        register_secret(secrets.token_urlsafe(32))
    error = _error()
    log = structlog.get_logger("lap.http")
    library = logging.getLogger("litestar")
    cases = {
        "http.request (info)": lambda: log.info("http.request", **ACCESS),
        "nested headers (info)": lambda: log.info("proxy.request", **ACCESS, **HEADERS),
        "error with traceback": lambda: log.error("request.failed", path="/api/agents", exc_info=error),
        "stdlib record (warning)": lambda: library.warning("Invalid HTTP request received from %s", "10.0.0.1"),
    }
    print(f"{args.secrets} registered secrets; ns per log line, best of {ROUNDS} interleaved rounds of {args.lines}")
    print(f"{'line':<26}{'format':<9}{'redacted':>10}{'plain':>10}{'cost':>10}")
    with open(os.devnull, "w") as null:
        sys.stderr = null  # LAP's logging writes to stderr
        try:
            for json in (True, False):
                best: dict[tuple[str, bool], float] = {}
                for _ in range(ROUNDS):  # on and off alternate, so a busy moment hits both
                    for redacted in (True, False):
                        configure(level=logging.DEBUG, json=json)
                        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=null))
                        if not redacted:
                            _without_redaction()
                        for name, once in cases.items():
                            ns = _time(once, args.lines)
                            best[name, redacted] = min(best.get((name, redacted), ns), ns)
                for name in cases:
                    on, off = best[name, True], best[name, False]
                    fmt = "json" if json else "console"
                    print(f"{name:<26}{fmt:<9}{on:>10.0f}{off:>10.0f}{on - off:>+10.0f}", file=sys.__stdout__)
        finally:
            sys.stderr = sys.__stderr__
    line = '{"request_id": "b2d6ff026cf8407b889bfab7a5fb31f6", "method": "POST", "status": 202, "event": "x"}'
    masked = '{"headers": {"authorization": "***", "accept": "*/*"}, "request_id": "b2d6ff026cf8407b889bfab7", "x": 1}'
    for what, text in (("no credential", line), ("a credential header", masked)):
        ns = min(_time(lambda text=text: redact_text(text), args.lines) for _ in range(ROUNDS))
        print(f"redact_text alone, a {len(text)}-character line with {what}: {ns:.0f} ns")
    event = {"event": "http.request", "level": "info", "timestamp": "2026-12-07T21:47:59.959380Z", **ACCESS}
    ns = min(_time(lambda: mask_credentials(None, "info", dict(event)), args.lines) for _ in range(ROUNDS))
    print(f"mask_credentials alone, the {len(event)}-key http.request event (with a copy of it): {ns:.0f} ns")


if __name__ == "__main__":
    main()
