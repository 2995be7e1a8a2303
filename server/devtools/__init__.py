"""Developer tools: test fixtures that are useful outside the test suite too (tiny models)."""

from __future__ import annotations

from server.devtools.tiny_model import make_test_model

__all__ = ["make_test_model"]
