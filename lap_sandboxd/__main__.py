"""`python -m lap_sandboxd (--socket PATH | --socket-fd N) [--token-fd N] --state DIR [--listen HOST:PORT]
[--egress HOST:PORT=TARGET ...] [--ready-fd N]`."""

from __future__ import annotations

import sys


def run() -> int:
    """Run sandboxd (see `lap_sandboxd.daemon.main`) in a process of its own; return its exit status.

    sandboxd speaks plain HTTP: `ssl` is kept out (http.client imports it when it can), and with it
    OpenSSL's libraries, a few ms and ~1 MiB of every sandbox.
    """
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from lap_sandboxd.daemon import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
