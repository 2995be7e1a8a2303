"""Drain with open streams: checks already owed are answered, then the stream ends with
UNAVAILABLE / DRAINING at once -- the drain does not wait for the grace period to expire;
in-flight unary calls finish; new calls are refused."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from tests.conftest import run_server
from tests.integration.helpers import A, U, details, request, stub


def turn(role: int, text: str) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(turn=c.Turn(role=role, content=text))


OPEN = g.StreamClassifyRequest(open=g.StreamOpen())


async def test_drain_answers_owed_stream_checks_then_ends_streams(tiny_model_dir) -> None:
    async with run_server(
        tiny_model_dir, backend="fake", max_batch_size=1, backend_options={"delay_s": 0.15}
    ) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            busy = s.StreamClassify(timeout=30)  # three checks owed when the drain starts
            for m in (OPEN, turn(U, "q1"), turn(A, "a1"), turn(U, "q2")):
                await busy.write(m)
            idle = s.StreamClassify(timeout=30)  # open, nothing owed
            await idle.write(OPEN)
            await idle.write(turn(U, "hello"))
            first_idle = await idle.read()  # its one check answered before the drain
            unary = asyncio.ensure_future(s.Classify(request((U, "in flight")), timeout=30))
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            drain = asyncio.ensure_future(srv.server.drain(20.0))
            await asyncio.sleep(0.02)
            async with grpc.aio.insecure_channel(srv.target) as probe:
                h = await health_pb2_grpc.HealthStub(probe).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING
            answers = []
            try:
                while True:
                    r = await busy.read()
                    if r is grpc.aio.EOF:
                        raise AssertionError("the stream ended OK instead of DRAINING")
                    answers.append(r)
            except grpc.aio.AioRpcError as err:
                busy_err = err
            try:
                await idle.read()
                raise AssertionError("the idle stream was not ended")
            except grpc.aio.AioRpcError as err:
                idle_err = err
            unary_result = await unary
            await drain
            took = time.monotonic() - t0
    assert [r.sequence for r in answers] == [1, 2, 3]  # every owed check answered, in order
    assert first_idle.sequence == 1 and unary_result.verdict
    for err in (busy_err, idle_err):
        d = details(err)
        assert d["code"] == grpc.StatusCode.UNAVAILABLE and d["reason"] == "DRAINING"
    assert took < 5.0  # far below the 20 s grace: open streams did not hold the drain


async def test_new_stream_during_drain_is_refused(tiny_model_dir) -> None:
    async with run_server(
        tiny_model_dir, backend="fake", max_batch_size=1, backend_options={"delay_s": 0.3}
    ) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            slow = asyncio.ensure_future(s.Classify(request((U, "keeps it busy")), timeout=30))
            await asyncio.sleep(0.05)
            drain = asyncio.ensure_future(srv.server.drain(10.0))
            await asyncio.sleep(0.02)
            late = s.StreamClassify(timeout=10)
            await late.write(OPEN)
            try:
                await late.read()
                raise AssertionError("a stream opened during the drain was served")
            except grpc.aio.AioRpcError as err:
                d = details(err)
            assert (await slow).verdict
            await drain
    assert d["code"] == grpc.StatusCode.UNAVAILABLE and d["reason"] == "DRAINING"
