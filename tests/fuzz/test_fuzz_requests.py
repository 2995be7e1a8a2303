"""Fuzzing request messages (marker ``fuzz``): no crash, only documented status codes.

In process (fast, the bulk of the cases): Hypothesis ClassifyRequests and stream message
sequences, and random mutations of serialized requests, through validation, rendering, the
token limit, the fake backend, interpretation and the response mapping (``strategies.Pipeline``).
Through a real server in its own process: Hypothesis requests and streams, and raw random or
mutated bytes sent with a generic channel call (no client-side parsing). The server must stay
alive and SERVING and log no unexpected error.

Documented codes: OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED.
Case counts (defaults; ``GUARDWIRE_FUZZ_SCALE`` multiplies them): 25k + 8k Hypothesis and 150k
mutations in process, 2k + 300 Hypothesis and 2.2k raw through the server (187.5k in all).

Run: ``pytest -m fuzz tests/fuzz -q -s`` (about 4 minutes on 2 cores; figures are printed).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from guardwire.v1 import guard_service_pb2_grpc
from tests.fuzz.strategies import (
    DOCUMENTED,
    SERVER_LIMITS,
    Pipeline,
    classify_requests,
    mutate,
    seed_messages,
    stream_sequences,
)
from tests.subprocess_server import spawn_server

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(1800)]

SCALE = float(os.environ.get("GUARDWIRE_FUZZ_SCALE", "1"))
N_CLASSIFY = int(25_000 * SCALE)
N_STREAM = int(8_000 * SCALE)
N_BYTES = int(150_000 * SCALE)
N_SERVER_CLASSIFY = int(2_000 * SCALE)
N_SERVER_STREAM = int(300 * SCALE)
N_SERVER_BYTES = int(2_000 * SCALE)
N_SERVER_STREAM_BYTES = int(200 * SCALE)
CLASSIFY = "/guardwire.v1.GuardService/Classify"
STREAM = "/guardwire.v1.GuardService/StreamClassify"


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def report(title: str, cases: int, codes: Counter, seconds: float) -> None:
    shown = {k.name: v for k, v in sorted(codes.items(), key=lambda kv: -kv[1])}
    print(f"\n[fuzz] {title}: {cases} cases in {seconds:.1f}s, codes {shown}")


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir) -> Pipeline:
    return Pipeline(tiny_model_dir)


def test_classify_requests_in_process(pipeline: Pipeline) -> None:
    codes: Counter = Counter()
    t0 = time.monotonic()

    @fuzz_settings(N_CLASSIFY)
    @given(classify_requests)
    def run(request) -> None:
        code = pipeline.classify(request)
        assert code in DOCUMENTED, code
        codes[code] += 1

    run()
    report("Classify in process (Hypothesis)", sum(codes.values()), codes, time.monotonic() - t0)
    assert sum(codes.values()) >= N_CLASSIFY
    assert codes[grpc.StatusCode.OK] > 0 and codes[grpc.StatusCode.INVALID_ARGUMENT] > 0


def test_stream_sequences_in_process(pipeline: Pipeline) -> None:
    codes: Counter = Counter()
    t0 = time.monotonic()

    @fuzz_settings(N_STREAM)
    @given(stream_sequences())
    def run(messages) -> None:
        code = pipeline.stream(messages)
        assert code in DOCUMENTED, code
        codes[code] += 1

    run()
    report("streams in process (Hypothesis)", sum(codes.values()), codes, time.monotonic() - t0)
    assert sum(codes.values()) >= N_STREAM
    assert pipeline.stream_reasons.get("STREAM_PROTOCOL", 0) > 0 and codes[grpc.StatusCode.OK] > 0


def test_mutated_bytes_in_process(pipeline: Pipeline) -> None:
    rng = random.Random(20240913)
    seeds = seed_messages()
    codes: Counter = Counter()
    t0 = time.monotonic()
    for _ in range(N_BYTES):
        data = mutate(rng.choice(seeds), rng)
        code = pipeline.classify_bytes(data)
        assert code in DOCUMENTED, (code, data)
        codes[code] += 1
    report("mutated bytes in process", N_BYTES, codes, time.monotonic() - t0)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with spawn_server(tiny_model_dir, **SERVER_LIMITS) as srv:
        yield srv
        log = srv.log_tail(400)
        assert srv.proc.poll() is None, "the server died:\n" + log
    assert "unexpected error" not in log and "Traceback" not in log, log


def _call_code(fn) -> grpc.StatusCode:
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]


def test_classify_through_the_server(server) -> None:
    codes: Counter = Counter()
    t0 = time.monotonic()
    with grpc.insecure_channel(server.target) as ch:
        stub = guard_service_pb2_grpc.GuardServiceStub(ch)

        @fuzz_settings(N_SERVER_CLASSIFY)
        @given(classify_requests)
        def run(request) -> None:
            code = _call_code(lambda: stub.Classify(request, timeout=10))
            assert code in DOCUMENTED, code
            codes[code] += 1

        run()
    report("Classify through the server", sum(codes.values()), codes, time.monotonic() - t0)


def test_streams_through_the_server(server) -> None:
    codes: Counter = Counter()
    t0 = time.monotonic()
    with grpc.insecure_channel(server.target) as ch:
        stub = guard_service_pb2_grpc.GuardServiceStub(ch)

        @fuzz_settings(N_SERVER_STREAM)
        @given(stream_sequences())
        def run(messages) -> None:
            code = _call_code(lambda: list(stub.StreamClassify(iter(messages), timeout=10)))
            assert code in DOCUMENTED, code
            codes[code] += 1

        run()
    report("streams through the server", sum(codes.values()), codes, time.monotonic() - t0)


def test_raw_bytes_through_the_server(server) -> None:
    rng = random.Random(7)
    seeds = seed_messages()
    codes: Counter = Counter()
    t0 = time.monotonic()
    with grpc.insecure_channel(server.target) as ch:
        classify = ch.unary_unary(CLASSIFY)  # bytes in, bytes out
        stream = ch.stream_stream(STREAM)
        for i in range(N_SERVER_BYTES):
            data = (
                mutate(rng.choice(seeds), rng)
                if i % 2
                else bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))
            )
            code = _call_code(lambda d=data: classify(d, timeout=10))
            assert code in DOCUMENTED, (code, data)
            codes[code] += 1
        for _ in range(N_SERVER_STREAM_BYTES):
            frames = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))]
            frames = [b"\x0a\x00", *frames] if rng.random() < 0.5 else frames
            code = _call_code(lambda f=frames: list(stream(iter(f), timeout=10)))
            assert code in DOCUMENTED, (code, frames)
            codes[code] += 1
    report("raw bytes through the server", sum(codes.values()), codes, time.monotonic() - t0)
