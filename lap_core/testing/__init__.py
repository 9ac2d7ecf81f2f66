"""Test kit for LAP plugin authors: conformance suites and fixtures (opt-in pytest plugin)."""
