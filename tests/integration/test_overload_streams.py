"""Stream admission: stream checks go through the micro-batcher's admission like unary calls
and are refused fast with RESOURCE_EXHAUSTED + RetryInfo; the open-stream limit too."""

from __future__ import annotations

import asyncio
import time

import grpc

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from tests.conftest import run_server
from tests.integration.helpers import U, details, request, stub

OPEN = g.StreamClassifyRequest(open=g.StreamOpen())


def turn(text: str) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(turn=c.Turn(role=U, content=text))


async def test_stream_checks_share_the_queue_and_are_refused_fast(tiny_model_dir) -> None:
    async with run_server(
        tiny_model_dir,
        backend="fake",
        max_queue=2,
        max_batch_size=1,
        max_streams=2,
        backend_options={"delay_s": 0.8},
    ) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            busy = [
                asyncio.ensure_future(s.Classify(request((U, f"q{i}")), timeout=10))
                for i in range(2)
            ]
            await asyncio.sleep(0.1)  # both admitted: the queue is full
            call = s.StreamClassify(timeout=10)
            await call.write(OPEN)
            t0 = time.monotonic()
            await call.write(turn("a check while the queue is full"))
            try:
                await call.read()
                raise AssertionError("the stream check was not refused")
            except grpc.aio.AioRpcError as err:
                refused = details(err)
            took = time.monotonic() - t0
            # the open-stream limit: two streams open, a third is refused at once
            open_streams = [s.StreamClassify(timeout=10) for _ in range(2)]
            for st in open_streams:
                await st.write(OPEN)
            await asyncio.sleep(0.1)
            third = s.StreamClassify(timeout=10)
            await third.write(OPEN)
            try:
                await third.read()
                raise AssertionError("a stream over max_streams was served")
            except grpc.aio.AioRpcError as err:
                too_many = details(err)
            for st in open_streams:
                st.cancel()
            results = await asyncio.gather(*busy)
            assert all(r.verdict for r in results)  # admitted work is unaffected
    assert refused["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused["reason"] == "OVERLOADED" and refused["retry_s"] and refused["retry_s"] > 0
    assert took < 0.6  # not after the 0.8 s batches ahead of it
    assert too_many["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert too_many["reason"] == "OVERLOADED" and too_many["retry_s"]
