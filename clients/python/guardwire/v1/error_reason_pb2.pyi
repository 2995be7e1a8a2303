from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_REQUEST: _ClassVar[ErrorReason]
    LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    UNKNOWN_POLICY: _ClassVar[ErrorReason]
    OVERLOADED: _ClassVar[ErrorReason]
    DEADLINE_EXPIRED: _ClassVar[ErrorReason]
    MODEL_NOT_READY: _ClassVar[ErrorReason]
    DRAINING: _ClassVar[ErrorReason]
    BACKEND_FAILURE: _ClassVar[ErrorReason]
    INTERNAL_ERROR: _ClassVar[ErrorReason]
    STREAM_PROTOCOL: _ClassVar[ErrorReason]
    AUTH_FAILED: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_REQUEST: ErrorReason
LIMIT_EXCEEDED: ErrorReason
UNKNOWN_POLICY: ErrorReason
OVERLOADED: ErrorReason
DEADLINE_EXPIRED: ErrorReason
MODEL_NOT_READY: ErrorReason
DRAINING: ErrorReason
BACKEND_FAILURE: ErrorReason
INTERNAL_ERROR: ErrorReason
STREAM_PROTOCOL: ErrorReason
AUTH_FAILED: ErrorReason
