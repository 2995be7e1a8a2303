"""The one table from domain errors to gRPC: code + ErrorInfo (+ BadRequest, RetryInfo)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from guardwire_server import errors

__all__ = ["DOMAIN", "internal_status", "to_grpc_status"]

DOMAIN = "guardwire.v1"
log = logging.getLogger(__name__)

_CODES: dict[type[errors.GuardwireError], int] = {
    errors.InvalidRequest: code_pb2.INVALID_ARGUMENT,
    errors.LimitExceeded: code_pb2.INVALID_ARGUMENT,
    errors.UnknownPolicy: code_pb2.NOT_FOUND,
    errors.Overloaded: code_pb2.RESOURCE_EXHAUSTED,
    errors.DeadlineExpired: code_pb2.DEADLINE_EXCEEDED,
    errors.ModelNotReady: code_pb2.UNAVAILABLE,
    errors.Draining: code_pb2.UNAVAILABLE,
    errors.BackendFailure: code_pb2.INTERNAL,
    errors.StreamProtocolError: code_pb2.INVALID_ARGUMENT,
    errors.AuthFailed: code_pb2.UNAUTHENTICATED,
}


def _pack(msg: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)  # type: ignore[arg-type]
    return packed


def _code_for(err: errors.GuardwireError) -> int:
    for cls in type(err).__mro__:
        if cls in _CODES:
            return _CODES[cls]  # type: ignore[index]
    return code_pb2.INTERNAL


def to_grpc_status(err: errors.GuardwireError) -> grpc.Status:
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=err.reason, domain=DOMAIN, metadata=dict(sorted(err.metadata.items()))
            )
        )
    ]
    if isinstance(err, errors.InvalidRequest):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in err.violations
                    ]
                )
            )
        )
    elif isinstance(err, errors.LimitExceeded | errors.StreamProtocolError):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=err.field, description=err.message
                        )
                    ]
                )
            )
        )
    elif isinstance(err, errors.Overloaded):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=_code_for(err), message=err.message, details=details)
    return rpc_status.to_status(status)


def internal_status(exc: BaseException) -> grpc.Status:
    """An unexpected exception: generic message on the wire, traceback in the log."""
    log.error("unexpected error while handling a request", exc_info=exc)
    return to_grpc_status(errors.GuardwireError("internal error; see the server log"))
