"""Errors stay small and cheap whatever the request: hostile sizes over a real socket.

* the status of any error (message + details) stays well under 8 KiB on the wire (gRPC's
  default client metadata limit is 16 KiB; past it the client sees RESOURCE_EXHAUSTED instead
  of the real error);
* validation work is bounded: a repeated field is checked against its count limit before any
  per-element work, so a huge list costs neither time nor memory;
* a message over the server's size limit answers INVALID_ARGUMENT / LIMIT_EXCEEDED.
"""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from tests.conftest import run_server
from tests.integration.helpers import U, details, request, stub
from tests.subprocess_server import spawn_server

WIRE_BOUND = 8 * 1024  # bytes of grpc-message + grpc-status-details-bin (base64) together
DEFAULT_MESSAGE_LIMIT = 4 * 2**20  # max(4 MiB, 4 * max_conversation_bytes) at the defaults


def wire_bytes(err: grpc.aio.AioRpcError | grpc.RpcError) -> int:
    """What the error costs in the response's trailers (the status details travel base64)."""
    raw = next(v for k, v in err.trailing_metadata() if k == "grpc-status-details-bin")
    return math.ceil(len(raw) / 3) * 4 + len(err.details().encode())


async def test_huge_unknown_policy_id_is_not_found_with_small_details(fake_server) -> None:
    policy_id = "p" * 100_000
    async with grpc.aio.insecure_channel(fake_server.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(ch).Classify(
                request((U, "hi"), policy=c.Policy(policy_id=policy_id)), timeout=10
            )
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.NOT_FOUND and d["reason"] == "UNKNOWN_POLICY"
    assert wire_bytes(info.value) < WIRE_BOUND
    assert d["metadata"]["policy_id"].startswith("ppp")  # quoted, but cut


async def test_many_invalid_turns_report_capped_violations(tiny_model_dir: Path) -> None:
    turns = [(c.ROLE_SYSTEM, f"be nice {i}") for i in range(1000)]
    async with run_server(tiny_model_dir, backend="fake", max_turns=1000) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub(ch).Classify(request(*turns), timeout=10)
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.INVALID_ARGUMENT and d["reason"] == "INVALID_REQUEST"
    assert d["fields"][0] == "conversation.turns[0].role"
    assert 1 <= len(d["fields"]) <= 10, len(d["fields"])
    assert "more" in info.value.details()
    assert wire_bytes(info.value) < WIRE_BOUND


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


RSS_GROWTH_BOUND = 300 * 2**20  # the unbounded server grew by about 1.8 GB on this request


def test_million_excluded_codes_are_refused_cheaply(tiny_model_dir: Path) -> None:
    """1,000,000 unknown excluded codes (4 MB on the wire, under the message limit): refused by
    the count limit before any per-code work; the server's peak RSS grows < 300 MB."""
    req = request((U, "hi"), policy=c.Policy(excluded_codes=["S0"] * 1_000_000))
    assert req.ByteSize() < DEFAULT_MESSAGE_LIMIT
    with spawn_server(tiny_model_dir) as srv:
        before = _vm_hwm(srv.pid)
        with grpc.insecure_channel(srv.target) as ch:
            with pytest.raises(grpc.RpcError) as info:
                stub(ch).Classify(req, timeout=60)
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        after = _vm_hwm(srv.pid)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    status = rpc_status.from_call(err)
    assert status is not None and "LIMIT_EXCEEDED" in str(status.details[0].value)
    assert "policy.excluded_codes" in err.details()
    assert wire_bytes(err) < WIRE_BOUND
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert after - before < RSS_GROWTH_BOUND, f"VmHWM grew by {(after - before) / 2**20:.0f} MB"


OVER_LIMIT = "x" * (DEFAULT_MESSAGE_LIMIT + 1024)  # just over the limit, inside gRPC's slack


async def test_classify_just_over_the_message_limit_is_limit_exceeded(fake_server) -> None:
    async with grpc.aio.insecure_channel(fake_server.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(ch).Classify(request((U, OVER_LIMIT)), timeout=20)
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.INVALID_ARGUMENT and d["reason"] == "LIMIT_EXCEEDED"
    assert d["metadata"]["limit"] == "max_message_bytes"
    assert d["metadata"]["max"] == str(DEFAULT_MESSAGE_LIMIT)
    assert int(d["metadata"]["value"]) > DEFAULT_MESSAGE_LIMIT


async def test_stream_message_just_over_the_message_limit_is_limit_exceeded(fake_server) -> None:
    async def messages():
        yield g.StreamClassifyRequest(open=g.StreamOpen())
        yield g.StreamClassifyRequest(turn=c.Turn(role=U, content=OVER_LIMIT))

    async with grpc.aio.insecure_channel(fake_server.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub(ch).StreamClassify(messages(), timeout=20):
                pass
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.INVALID_ARGUMENT and d["reason"] == "LIMIT_EXCEEDED"
    assert d["metadata"]["limit"] == "max_message_bytes"
