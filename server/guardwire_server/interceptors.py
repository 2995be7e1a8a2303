"""grpc.aio server interceptors: the bearer-token check and undecodable-message handling.

* ``BearerTokenInterceptor``: every call must carry ``authorization: Bearer <token>`` metadata
  (compared in constant time); otherwise it is answered UNAUTHENTICATED with ErrorInfo
  ``AUTH_FAILED`` before the request is even parsed. The gRPC health service is exempt, so
  Kubernetes probes and load balancers need no secret. The token never appears in a log or an
  error message.
* ``MalformedRequestInterceptor``: a GuardService request whose bytes are not a valid message
  (corrupt wire format, invalid UTF-8 in a string) is answered INVALID_ARGUMENT /
  INVALID_REQUEST -- by default gRPC answers UNKNOWN with the parser's exception text -- and
  one bigger than ``max_message_bytes`` INVALID_ARGUMENT / LIMIT_EXCEEDED (limit
  ``max_message_bytes``), checked on the byte count before any parsing. The handler's request
  deserializer is swapped for a lenient one that hands the handler a marker instead of raising.
  gRPC core itself is configured to accept ``MESSAGE_SLACK_BYTES`` more than the limit
  (``guardwire_server.app``) so that a message just over it reaches this check; a message past
  the slack is still refused by gRPC core with RESOURCE_EXHAUSTED "Received message larger than
  max" and no ErrorInfo (the Python client does not retry it: it retries RESOURCE_EXHAUSTED only
  with ErrorInfo OVERLOADED).

Order (``guardwire_server.app``): telemetry first (it sees every outcome), then the token check,
then
the decoding guard (closest to the handlers).
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from guardwire_server.errors import (
    AuthFailed,
    FieldViolation,
    GuardwireError,
    InvalidRequest,
    LimitExceeded,
)
from guardwire_server.status import to_grpc_status

__all__ = [
    "HEALTH_PREFIX",
    "MESSAGE_SLACK_BYTES",
    "BearerTokenInterceptor",
    "MalformedRequestInterceptor",
]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
GUARD_PREFIX = "/guardwire.v1.GuardService/"
MESSAGE_SLACK_BYTES = 64 * 1024  # what gRPC core accepts past max_message_bytes

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _rebuild(handler: grpc.RpcMethodHandler, behavior: Any, deserializer: Any) -> Any:
    """A handler of the same kind as ``handler`` with another behavior and deserializer."""
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(behavior, deserializer, serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(behavior, deserializer, serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
    return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls without the right ``authorization: Bearer`` metadata (health exempt)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the bearer token must not be empty")
        self._expected = f"bearer {token}".encode()
        self._status = to_grpc_status(
            AuthFailed(
                'missing or invalid bearer token: send metadata "authorization: Bearer <token>"'
            )
        )

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key.lower() != "authorization":
                continue
            raw = value if isinstance(value, bytes) else str(value).encode()
            scheme, _, rest = raw.partition(b" ")
            return hmac.compare_digest(scheme.lower() + b" " + rest.strip(), self._expected)
        return False

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self._authorized(handler_call_details):
            return handler
        status = self._status

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort_with_status(status)

        return _rebuild(handler, deny, None)  # None: the bytes are never parsed


class _Rejected:
    """What the lenient deserializer hands the handler instead of a message it cannot take."""

    __slots__ = ("error",)

    def __init__(self, error: GuardwireError) -> None:
        self.error = error


def _invalid(method: str, exc: Exception) -> InvalidRequest:
    name = method.rsplit("/", 1)[-1]
    return InvalidRequest(
        [
            FieldViolation(
                "(message)",
                f"the {name} request is not a valid protobuf message ({type(exc).__name__})",
            )
        ]
    )


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers undecodable or too big GuardService requests with INVALID_ARGUMENT (see the
    module)."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self._max_bytes = max_message_bytes

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or not method.startswith(GUARD_PREFIX):
            return handler
        decode = handler.request_deserializer
        if decode is None:
            return handler

        max_bytes = self._max_bytes

        def lenient(data: bytes) -> Any:
            if len(data) > max_bytes:  # before parsing: the size is all that is looked at
                return _Rejected(
                    LimitExceeded("(message)", "max_message_bytes", max_bytes, len(data))
                )
            try:
                return decode(data)
            except Exception as exc:
                return _Rejected(_invalid(method, exc))

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if isinstance(request, _Rejected):
                    await context.abort_with_status(to_grpc_status(request.error))
                return await inner(request, context)

            return _rebuild(handler, unary, lenient)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            inner_stream = handler.stream_stream

            async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, _Rejected):
                        raise request.error  # the servicer answers it
                    yield request

            async def stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async for response in inner_stream(checked(requests), context):
                    yield response

            return _rebuild(handler, stream, lenient)
        return handler
