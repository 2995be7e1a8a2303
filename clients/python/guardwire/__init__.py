"""Python client for the Guardwire guard sidecar (distribution ``guardwire-client``).

``GuardClient`` / ``AsyncGuardClient`` classify; ``check`` gives a three-valued ``Outcome``;
``AsyncGuardClient.stream`` opens a ``StreamClassify`` stream. Generated stubs live in
``guardwire.v1``.
"""

from guardwire.client import (
    DEFAULT_TIMEOUT_S,
    AsyncGuardClient,
    GuardClient,
    GuardStreamContext,
    RetryPolicy,
)
from guardwire.errors import (
    DeadlineError,
    FieldViolation,
    GuardError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ServerError,
    UnavailableError,
)
from guardwire.messages import CategoryScore, ClassifyResult, ConversationInput
from guardwire.outcome import FailMode, Outcome, OutcomeKind, UnavailableCounter
from guardwire.streaming import GenerationBlocked, GuardStream, StreamVerdict, guard_generation

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncGuardClient",
    "CategoryScore",
    "ClassifyResult",
    "ConversationInput",
    "DeadlineError",
    "FailMode",
    "FieldViolation",
    "GenerationBlocked",
    "GuardClient",
    "GuardError",
    "GuardStream",
    "GuardStreamContext",
    "InvalidRequestError",
    "NotFoundError",
    "Outcome",
    "OutcomeKind",
    "OverloadedError",
    "RetryPolicy",
    "ServerError",
    "StreamVerdict",
    "UnavailableCounter",
    "UnavailableError",
    "guard_generation",
]
