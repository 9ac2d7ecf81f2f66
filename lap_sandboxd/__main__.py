"""`python -m lap_sandboxd --socket PATH --state DIR [--listen HOST:PORT] [--egress HOST:PORT=TARGET ...]`."""

from __future__ import annotations

import sys

from lap_sandboxd.server import main

if __name__ == "__main__":
    sys.exit(main())
