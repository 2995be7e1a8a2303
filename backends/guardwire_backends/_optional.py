"""Lazy imports of heavy optional dependencies (torch, transformers, onnxruntime...).

The server must start and answer ``--help`` without them; a backend imports what it needs at load
time, and a missing package becomes an error that says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming ``pip install 'guardwire[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {module!r} package is needed for this feature but could not be imported "
            f"({exc}); install it with: pip install 'guardwire[{extra}]'"
        ) from exc
