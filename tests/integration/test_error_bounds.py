"""Errors stay small and cheap whatever the request: hostile sizes over a real socket.

* the status of any error (message + details) stays well under 8 KiB on the wire (gRPC's
  default client metadata limit is 16 KiB; past it the client sees RESOURCE_EXHAUSTED instead
  of the real error).
"""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from guardwire.v1 import conversation_pb2 as c
from tests.conftest import run_server
from tests.integration.helpers import U, details, request, stub

WIRE_BOUND = 8 * 1024  # bytes of grpc-message + grpc-status-details-bin (base64) together


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
