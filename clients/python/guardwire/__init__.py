"""Python client for the Guardwire guard sidecar (package ``guardwire``).

Generated stubs live in ``guardwire.v1``; the typed wrapper is ``guardwire.client``.
"""

from guardwire.client import AsyncGuardClient, CategoryScore, ClassifyResult, GuardClient
from guardwire.errors import (
    DeadlineError,
    GuardError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
)

__all__ = [
    "AsyncGuardClient",
    "CategoryScore",
    "ClassifyResult",
    "DeadlineError",
    "GuardClient",
    "GuardError",
    "InvalidRequestError",
    "OverloadedError",
    "UnavailableError",
]
