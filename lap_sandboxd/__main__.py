"""`python -m lap_sandboxd (--socket PATH | --socket-fd N) [--token-fd N] --state DIR [--listen HOST:PORT]
[--egress HOST:PORT=TARGET ...]`."""

from __future__ import annotations

import sys

from lap_sandboxd.daemon import main

if __name__ == "__main__":
    sys.exit(main())
