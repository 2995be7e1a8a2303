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
from guardwire.outcome import FailMode, Outcome, OutcomeKind, UnavailableCounter

__all__ = [
    "AsyncGuardClient",
    "CategoryScore",
    "ClassifyResult",
    "DeadlineError",
    "FailMode",
    "GuardClient",
    "GuardError",
    "InvalidRequestError",
    "Outcome",
    "OutcomeKind",
    "OverloadedError",
    "UnavailableCounter",
    "UnavailableError",
]
