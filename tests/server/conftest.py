"""Tests of the core's behaviour seen through the bundled server (they may use the core's internals)."""

from tests.server.fixtures import api, database, serve

__all__ = ["api", "database", "serve"]
