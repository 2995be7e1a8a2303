"""The verdict cache over a real gRPC server: a repeat is answered without a backend call."""

from __future__ import annotations

import asyncio

import grpc

from guardwire.v1 import guard_service_pb2
from tests.conftest import run_server
from tests.integration.helpers import A, U, request, stub


async def test_a_repeated_request_is_answered_without_inference(tiny_model_dir):
    async with run_server(
        tiny_model_dir,
        backend="fake",
        verdict_cache_entries=64,
        backend_options={"delay_s": 0.2},
    ) as running:
        backend = running.server.guard.backend
        cache = running.server.guard.verdict_cache
        async with grpc.aio.insecure_channel(running.target) as ch:
            s = stub(ch)
            req = request((U, "How do I bake bread?"), (A, "Knead the dough, let it rise."))
            calls = len(backend.batch_sizes)
            first = await s.Classify(req, timeout=30)
            assert len(backend.batch_sizes) == calls + 1
            assert first.timings.batch_size >= 1
            assert first.timings.inference.ToNanoseconds() >= 150_000_000  # the 0.2 s delay

            again = await s.Classify(
                request(
                    (U, "How do I bake bread?"),
                    (A, "Knead the dough, let it rise."),
                    options=guard_service_pb2.ClassifyOptions(threshold=0.999),
                ),
                timeout=30,
            )
            assert len(backend.batch_sizes) == calls + 1, "the repeat reached the backend"
            assert again.unsafe_score == first.unsafe_score
            assert again.threshold != first.threshold
            t = again.timings
            assert t.batch_size == 0 and t.computed_tokens == 0
            assert t.inference.ToNanoseconds() == 0
            assert t.cached_tokens == first.timings.computed_tokens + first.timings.cached_tokens
            assert t.total.ToNanoseconds() < 150_000_000
            assert cache.hits == 1

            # identical requests in flight together share one inference (single flight)
            fresh = request((U, "A question asked by four clients at once"))
            calls = len(backend.batch_sizes)
            answers = await asyncio.gather(*(s.Classify(fresh, timeout=30) for _ in range(4)))
            assert len(backend.batch_sizes) == calls + 1
            assert len({a.unsafe_score for a in answers}) == 1
            assert sorted(a.timings.batch_size for a in answers)[:3] == [0, 0, 0]

            # a different conversation is not a hit
            calls = len(backend.batch_sizes)
            await s.Classify(request((U, "How do I bake a cake?")), timeout=30)
            assert len(backend.batch_sizes) == calls + 1


async def test_the_cache_is_off_by_default(tiny_model_dir):
    async with run_server(tiny_model_dir, backend="fake") as running:
        assert running.server.guard.verdict_cache is None
        backend = running.server.guard.backend
        async with grpc.aio.insecure_channel(running.target) as ch:
            s = stub(ch)
            calls = len(backend.batch_sizes)
            for _ in range(2):
                r = await s.Classify(request((U, "How do I bake bread?")), timeout=30)
                assert r.timings.batch_size >= 1
            assert len(backend.batch_sizes) == calls + 2
