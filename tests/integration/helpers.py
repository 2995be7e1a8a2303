"""Small helpers for integration tests: stubs, requests, decoding rich statuses."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc

U = conversation_pb2.ROLE_USER
A = conversation_pb2.ROLE_ASSISTANT


def request(*turns: tuple[int, str], **kwargs: Any) -> guard_service_pb2.ClassifyRequest:
    return guard_service_pb2.ClassifyRequest(
        conversation=conversation_pb2.Conversation(
            turns=[conversation_pb2.Turn(role=r, content=c) for r, c in turns]
        ),
        **kwargs,
    )


def stub(channel: grpc.aio.Channel) -> guard_service_pb2_grpc.GuardServiceStub:
    return guard_service_pb2_grpc.GuardServiceStub(channel)


def details(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    """Decodes ErrorInfo / BadRequest / RetryInfo from a failed call."""
    status = rpc_status.from_call(err)
    out: dict[str, Any] = {"code": err.code(), "fields": [], "retry_s": None}
    assert status is not None, "server must send a rich google.rpc.Status"
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            out["reason"], out["domain"], out["metadata"] = info.reason, info.domain, info.metadata
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            out["fields"] = [v.field for v in bad.field_violations]
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            out["retry_s"] = info.retry_delay.ToNanoseconds() / 1e9
    assert out.get("domain") == "guardwire.v1", "every error carries ErrorInfo"
    return out
