"""The server's tests share the fixtures of tests/server: a real server over HTTP, on the process backend."""

from tests.server.fixtures import api, database, serve

__all__ = ["api", "database", "serve"]
