"""The default-run version of ``tests/fuzz`` (a few hundred cases, seconds): the same strategies
in process and through the session's fake-backend server; only documented status codes."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from guardwire.v1 import guard_service_pb2_grpc
from tests.fuzz.strategies import (
    DOCUMENTED,
    Pipeline,
    classify_requests,
    mutate,
    seed_messages,
    stream_sequences,
)

SMALL = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir) -> Pipeline:
    return Pipeline(tiny_model_dir)


def test_in_process(pipeline: Pipeline) -> None:
    @SMALL
    @given(classify_requests)
    def classify(request) -> None:
        assert pipeline.classify(request) in DOCUMENTED

    @settings(SMALL, max_examples=60)
    @given(stream_sequences())
    def stream(messages) -> None:
        assert pipeline.stream(messages) in DOCUMENTED

    classify()
    stream()
    rng = random.Random(3)
    seeds = seed_messages()
    for _ in range(500):
        assert pipeline.classify_bytes(mutate(rng.choice(seeds), rng)) in DOCUMENTED
    assert pipeline.cases >= 700


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


async def test_through_the_server(fake_server) -> None:
    """Hypothesis runs in a worker thread with a blocking channel, so the session's event loop
    (which runs the server) keeps serving."""

    def work() -> int:
        n = 0
        with grpc.insecure_channel(fake_server.target) as ch:
            stub = guard_service_pb2_grpc.GuardServiceStub(ch)

            @settings(SMALL, max_examples=60)
            @given(classify_requests)
            def classify(request) -> None:
                assert _code(lambda: stub.Classify(request, timeout=10)) in DOCUMENTED

            @settings(SMALL, max_examples=20)
            @given(stream_sequences())
            def stream(messages) -> None:
                code = _code(lambda: list(stub.StreamClassify(iter(messages), timeout=10)))
                assert code in DOCUMENTED

            classify()
            stream()
            raw = ch.unary_unary("/guardwire.v1.GuardService/Classify")
            rng = random.Random(11)
            seeds = seed_messages()
            for _ in range(100):
                data = mutate(rng.choice(seeds), rng)
                assert _code(lambda d=data: raw(d, timeout=10)) in DOCUMENTED, data
                n += 1
        return n

    assert await asyncio.to_thread(work) == 100
