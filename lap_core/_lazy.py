"""Names a package imports on first use (PEP 562), so that importing it costs little."""

from __future__ import annotations

import importlib
from typing import Any


def lazy_attribute(package: str, sources: dict[str, str], namespace: dict[str, Any], name: str) -> Any:
    """Import `name` from its module in `sources`, keep it in the package's `namespace`, return it.

    For a package's module-level `__getattr__`; raise `AttributeError` for a name it does not have.
    """
    try:
        module = sources[name]
    except KeyError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value
