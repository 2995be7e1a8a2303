"""Typed client errors decoded from the server's rich status (google.rpc ErrorInfo & co)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "DeadlineError",
    "FieldViolation",
    "GuardError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "ServerError",
    "UnavailableError",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class GuardError(Exception):
    """Any failed call. ``reason`` is the server's ErrorReason name ("" if none was sent);
    ``attempts``: how many calls the client made before giving up (retries included)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_delay_s: float | None = None
    attempts: int = 1

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class InvalidRequestError(GuardError):
    """INVALID_ARGUMENT: fix the request; retrying unchanged fails the same way."""


class NotFoundError(GuardError):
    """NOT_FOUND: e.g. an unknown policy id."""


class OverloadedError(GuardError):
    """RESOURCE_EXHAUSTED: with reason OVERLOADED, retry after ``retry_delay_s``; any other
    reason (e.g. a message over a size limit) fails the same way again."""


class DeadlineError(GuardError):
    """DEADLINE_EXCEEDED: nothing was scored."""


class UnavailableError(GuardError):
    """UNAVAILABLE: model loading, server draining, or unreachable."""


class ServerError(GuardError):
    """INTERNAL and anything else."""


_BY_CODE: dict[grpc.StatusCode, type[GuardError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(err: grpc.RpcError) -> GuardError:
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, ServerError)
    out = cls(code=code, message=err.details() or "")  # type: ignore[attr-defined]
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except Exception:  # a malformed status must not hide the original error
        status = None
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason = info.reason
            out.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.field_violations = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            out.retry_delay_s = retry.retry_delay.ToNanoseconds() / 1e9
    return out
