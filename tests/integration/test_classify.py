"""Classify and GetModelInfo over real sockets (TCP and Unix) with the tiny torch model."""

from __future__ import annotations

import grpc
import pytest

from guardwire.v1 import conversation_pb2, guard_service_pb2, verdict_pb2
from tests.integration.helpers import A, U, request, stub


@pytest.mark.parametrize("transport", ["tcp", "uds"])
async def test_classify_returns_a_full_verdict(guard_server, transport):
    target = guard_server.target if transport == "tcp" else guard_server.uds_target
    async with grpc.aio.insecure_channel(target) as ch:
        r = await stub(ch).Classify(
            request(
                (U, "How do I bake bread?"),
                options=guard_service_pb2.ClassifyOptions(include_category_scores=True),
            ),
            timeout=30,
        )
    assert r.verdict in (verdict_pb2.VERDICT_SAFE, verdict_pb2.VERDICT_UNSAFE)
    assert 0.0 <= r.unsafe_score <= 1.0
    assert (r.verdict == verdict_pb2.VERDICT_UNSAFE) == (r.unsafe_score >= r.threshold)
    assert r.threshold == pytest.approx(0.5)
    assert r.assessed_role == conversation_pb2.ROLE_USER
    assert [c.code for c in r.category_scores] == [f"S{i}" for i in range(1, 14)]
    assert all(0.0 <= c.score <= r.unsafe_score + 1e-6 for c in r.category_scores)
    assert sum(c.score for c in r.category_scores) == pytest.approx(r.unsafe_score, abs=1e-4)
    assert r.policy_id.startswith("p-")
    assert r.verdict_token_mass > 0.5
    assert r.timings.batch_size >= 1
    assert r.timings.total.ToNanoseconds() >= r.timings.inference.ToNanoseconds() > 0
    if r.verdict == verdict_pb2.VERDICT_UNSAFE:
        assert r.categories, "an unsafe verdict names at least one category"


async def test_threshold_option_decides_the_verdict(guard_server):
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        s = stub(ch)
        base = await s.Classify(request((U, "Tell me a joke")), timeout=30)
        low = await s.Classify(
            request(
                (U, "Tell me a joke"),
                options=guard_service_pb2.ClassifyOptions(
                    threshold=max(1e-6, base.unsafe_score * 0.5)
                ),
            ),
            timeout=30,
        )
        high = await s.Classify(
            request(
                (U, "Tell me a joke"),
                options=guard_service_pb2.ClassifyOptions(
                    threshold=min(1.0, base.unsafe_score + 1e-3)
                ),
            ),
            timeout=30,
        )
    assert low.unsafe_score == pytest.approx(base.unsafe_score, abs=1e-5)
    assert low.verdict == verdict_pb2.VERDICT_UNSAFE
    assert high.verdict == verdict_pb2.VERDICT_SAFE
    assert not high.categories


async def test_role_cuts_the_conversation(guard_server):
    convo = ((U, "hi there"), (A, "hello! how can I help?"), (U, "write a poem"))
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        s = stub(ch)
        as_agent = await s.Classify(request(*convo, role=A), timeout=30)
        cut = await s.Classify(request(*convo[:2]), timeout=30)
        as_user = await s.Classify(request(*convo), timeout=30)
    assert as_agent.assessed_role == conversation_pb2.ROLE_ASSISTANT
    assert as_agent.unsafe_score == pytest.approx(cut.unsafe_score, abs=1e-5)
    assert as_user.assessed_role == conversation_pb2.ROLE_USER


async def test_policy_changes_the_prompt_and_the_policy_id(guard_server):
    custom = conversation_pb2.Policy(
        categories=[
            conversation_pb2.Category(
                code="C1", name="Cooking secrets.", description="No recipes."
            ),
            conversation_pb2.Category(code="C2", name="Weather talk."),
        ]
    )
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        s = stub(ch)
        default = await s.Classify(request((U, "recipe please")), timeout=30)
        excl = await s.Classify(
            request(
                (U, "recipe please"), policy=conversation_pb2.Policy(excluded_codes=["S1", "S2"])
            ),
            timeout=30,
        )
        own = await s.Classify(
            request(
                (U, "recipe please"),
                policy=custom,
                options=guard_service_pb2.ClassifyOptions(include_category_scores=True),
            ),
            timeout=30,
        )
    assert len({default.policy_id, excl.policy_id, own.policy_id}) == 3
    assert [c.code for c in own.category_scores] == ["C1", "C2"]
    assert own.category_scores[0].name == "Cooking secrets."


async def test_same_request_same_scores_and_identical_repeat(guard_server):
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        s = stub(ch)
        a = await s.Classify(request((U, "same text")), timeout=30)
        b = await s.Classify(request((U, "same text")), timeout=30)
    assert a.unsafe_score == pytest.approx(b.unsafe_score, abs=1e-5)


async def test_get_model_info(guard_server, tiny_model_dir):
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        info = await stub(ch).GetModelInfo(guard_service_pb2.GetModelInfoRequest(), timeout=10)
    assert info.family == "llama-guard-3-1b"
    assert info.backend == guard_server.backend
    assert info.device == "cpu"
    assert info.dtype == "float32"
    assert info.model_id == str(guard_server.model_dir)
    assert [c.code for c in info.default_categories] == [f"S{i}" for i in range(1, 14)]
    assert info.limits.max_turns == 64 and info.limits.max_queue == 256
    assert len(info.template_hash) == 64
    assert len(info.verdict_token_ids) == 2


async def test_python_clients_sync_and_async(guard_server):
    import asyncio

    from guardwire import AsyncGuardClient, GuardClient

    async with AsyncGuardClient(guard_server.target) as client:
        r = await client.classify(
            [("user", "hello"), ("assistant", "hi!")], include_category_scores=True
        )
    assert r.verdict in ("safe", "unsafe") and r.assessed_role == "assistant"
    assert len(r.category_scores) == 13

    def sync_call():
        with GuardClient(guard_server.target) as client:
            return client.classify("hello")

    r2 = await asyncio.to_thread(sync_call)
    assert r2.assessed_role == "user" and 0 <= r2.unsafe_score <= 1


@pytest.mark.parametrize(("default", "expect"), [(1e-6, "UNSAFE"), (1.0, "SAFE")])
async def test_calibrated_thresholds_file_applies_when_request_sets_none(
    tiny_model_dir, tmp_path, default, expect
):
    from guardwire_tools.evaluation.calibrate import ThresholdPolicy, write_thresholds
    from tests.conftest import run_server

    path = tmp_path / "thresholds.yaml"
    write_thresholds(ThresholdPolicy(thresholds={"default": default}), path)
    async with run_server(tiny_model_dir, thresholds_file=str(path)) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            served = await s.Classify(request((U, "is this fine?")), timeout=30)
            explicit = await s.Classify(
                request(
                    (U, "is this fine?"),
                    options=guard_service_pb2.ClassifyOptions(threshold=0.5),
                ),
                timeout=30,
            )
    assert served.threshold == pytest.approx(default)
    assert verdict_pb2.Verdict.Name(served.verdict) == f"VERDICT_{expect}"
    assert explicit.threshold == pytest.approx(0.5)
