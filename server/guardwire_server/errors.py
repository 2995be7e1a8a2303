"""Typed domain errors. Domain code raises these; only ``guardwire_server.status`` maps them to
gRPC.

Exception tree::

    GuardwireError
     ├── InvalidRequest      INVALID_ARGUMENT / INVALID_REQUEST   (field violations)
     ├── LimitExceeded       INVALID_ARGUMENT / LIMIT_EXCEEDED    (limit, value, field)
     ├── UnknownPolicy       NOT_FOUND        / UNKNOWN_POLICY
     ├── Overloaded          RESOURCE_EXHAUSTED / OVERLOADED      (retry_after_s)
     ├── DeadlineExpired     DEADLINE_EXCEEDED / DEADLINE_EXPIRED
     ├── ModelNotReady       UNAVAILABLE      / MODEL_NOT_READY
     ├── Draining            UNAVAILABLE      / DRAINING
     ├── BackendFailure      INTERNAL         / BACKEND_FAILURE
     ├── StreamProtocolError INVALID_ARGUMENT / STREAM_PROTOCOL (rule; BadRequest on the kind)
     └── AuthFailed          UNAUTHENTICATED  / AUTH_FAILED
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthFailed",
    "BackendFailure",
    "DeadlineExpired",
    "Draining",
    "FieldViolation",
    "GuardwireError",
    "InvalidRequest",
    "LimitExceeded",
    "ModelNotReady",
    "Overloaded",
    "StreamProtocolError",
    "UnknownPolicy",
    "cut",
    "quote",
]

MAX_VIOLATIONS = 10  # field violations an InvalidRequest keeps (the rest are counted)
QUOTE_CHARS = 64  # request text quoted in an error is cut to this many characters


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of request text for an error message, cut to ``limit`` characters + "…"."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def cut(text: str, limit: int = QUOTE_CHARS) -> str:
    """Request text for ErrorInfo metadata: at most ``limit`` characters + "…"."""
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str  # proto path, e.g. "conversation.turns[2].content"
    description: str


class GuardwireError(Exception):
    """Base class. ``reason`` is the ErrorReason name sent in ErrorInfo."""

    reason = "INTERNAL_ERROR"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidRequest(GuardwireError):
    reason = "INVALID_REQUEST"

    def __init__(self, violations: list[FieldViolation]) -> None:
        assert violations, "InvalidRequest needs at least one violation"
        kept = violations[:MAX_VIOLATIONS]
        self.omitted = len(violations) - len(kept)  # reported as "and N more", not listed
        text = "; ".join(f"{v.field}: {v.description}" for v in kept)
        # the count first: a long message is cut at its end (guardwire_server.status)
        head = f" ({len(violations)} violations, the first {len(kept)} listed, and "
        head = f"{head}{self.omitted} more)" if self.omitted else ""
        super().__init__(f"invalid request{head}: {text}", metadata={"field": kept[0].field})
        if self.omitted:
            self.metadata["violations"] = str(len(violations))
        self.violations = kept

    @classmethod
    def one(cls, field: str, description: str) -> InvalidRequest:
        return cls([FieldViolation(field, description)])


class LimitExceeded(GuardwireError):
    reason = "LIMIT_EXCEEDED"

    def __init__(self, field: str, limit_name: str, limit: int, value: int) -> None:
        super().__init__(
            f"{field}: {value} exceeds the limit {limit_name}={limit}",
            metadata={"field": field, "limit": limit_name, "value": str(value), "max": str(limit)},
        )
        self.field = field


class UnknownPolicy(GuardwireError):
    reason = "UNKNOWN_POLICY"

    def __init__(self, policy_id: str, known: list[str]) -> None:
        super().__init__(
            f"unknown policy_id {quote(policy_id)}; configured: {', '.join(known) or '(none)'}",
            metadata={"policy_id": cut(policy_id)},
        )


class Overloaded(GuardwireError):
    reason = "OVERLOADED"

    def __init__(self, message: str, *, retry_after_s: float, queue_limit: int) -> None:
        super().__init__(message, metadata={"queue_limit": str(queue_limit)})
        self.retry_after_s = retry_after_s


class DeadlineExpired(GuardwireError):
    reason = "DEADLINE_EXPIRED"


class ModelNotReady(GuardwireError):
    reason = "MODEL_NOT_READY"


class Draining(GuardwireError):
    reason = "DRAINING"


class BackendFailure(GuardwireError):
    reason = "BACKEND_FAILURE"


class StreamProtocolError(GuardwireError):
    reason = "STREAM_PROTOCOL"

    def __init__(self, rule: str, message: str, field: str = "kind") -> None:
        super().__init__(message, metadata={"rule": rule})
        self.rule = rule
        self.field = field  # the StreamClassifyRequest field (its kind) that broke the rule


class AuthFailed(GuardwireError):
    reason = "AUTH_FAILED"
