"""The one table from domain errors to gRPC: code + ErrorInfo (+ BadRequest, RetryInfo).

Every status is bounded here, whatever the error quotes from the request: the message is cut to
``MAX_MESSAGE_BYTES`` (UTF-8), every ErrorInfo metadata value and BadRequest string to
``MAX_FIELD_CHARS``, and the serialized ``google.rpc.Status`` to ``MAX_STATUS_BYTES`` (the
BadRequest is dropped, then the message cut further, if it is still bigger). On the wire that is
at most ~3 KiB of ``grpc-message`` plus ~4 KiB of base64 ``grpc-status-details-bin``: well under
gRPC's default 16 KiB client metadata limit, past which a client would see RESOURCE_EXHAUSTED
instead of the real error.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from guardwire_server import errors

__all__ = ["DOMAIN", "MAX_MESSAGE_BYTES", "MAX_STATUS_BYTES", "internal_status", "to_grpc_status"]

DOMAIN = "guardwire.v1"
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024  # UTF-8 bytes of the status message (grpc-message)
MAX_FIELD_CHARS = 256  # characters of one metadata value or BadRequest field / description
MAX_STATUS_BYTES = 3072  # the serialized google.rpc.Status, details included

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


def _cut_utf8(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes (cut on a character boundary, "…" appended)."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: max(0, limit - 3)].decode("utf-8", "ignore") + "…"


def _short(text: str) -> str:
    return errors.cut(text, MAX_FIELD_CHARS)


def _bounded(code: int, message: str, details: list[any_pb2.Any]) -> status_pb2.Status:
    """The status with the message and the whole serialized size within the bounds."""
    status = status_pb2.Status(
        code=code, message=_cut_utf8(message, MAX_MESSAGE_BYTES), details=details
    )
    if status.ByteSize() > MAX_STATUS_BYTES:  # keep ErrorInfo (the reason), drop the rest
        status = status_pb2.Status(code=code, message=status.message, details=details[:1])
    if status.ByteSize() > MAX_STATUS_BYTES:
        room = max(0, MAX_STATUS_BYTES - status.ByteSize() + len(status.message.encode()))
        status.message = _cut_utf8(status.message, room)
    return status


def to_grpc_status(err: errors.GuardwireError) -> grpc.Status:
    metadata = {_short(k): _short(v) for k, v in sorted(err.metadata.items())[:16]}
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata))
    ]
    if isinstance(err, errors.InvalidRequest):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_short(v.field), description=_short(v.description)
                        )
                        for v in err.violations[: errors.MAX_VIOLATIONS]
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
                            field=_short(err.field), description=_short(err.message)
                        )
                    ]
                )
            )
        )
    elif isinstance(err, errors.Overloaded):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(_bounded(_code_for(err), err.message, details))


def internal_status(exc: BaseException) -> grpc.Status:
    """An unexpected exception: generic message on the wire, traceback in the log."""
    log.error("unexpected error while handling a request", exc_info=exc)
    return to_grpc_status(errors.GuardwireError("internal error; see the server log"))
