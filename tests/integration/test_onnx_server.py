"""Classify and GetModelInfo over real sockets with ``backend="onnxruntime"`` (the tiny model
exported once per session), and the same answers as the torch server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("torch")

from guardwire.v1 import conversation_pb2, guard_service_pb2, verdict_pb2
from tests.conftest import RunningServer, run_server
from tests.integration.helpers import A, U, request, stub
from tests.parity.conftest import exported_onnx_dir

SCORES = guard_service_pb2.ClassifyOptions(include_category_scores=True)


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_onnx_dir(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
async def onnx_server(onnx_dir: Path) -> AsyncIterator[RunningServer]:
    async with run_server(onnx_dir, uds=True, backend="onnxruntime", threads=1) as running:
        yield running


@pytest.mark.parametrize("transport", ["tcp", "uds"])
async def test_classify_returns_a_full_verdict(onnx_server, transport):
    target = onnx_server.target if transport == "tcp" else onnx_server.uds_target
    async with grpc.aio.insecure_channel(target) as ch:
        r = await stub(ch).Classify(
            request((U, "How do I bake bread?"), options=SCORES), timeout=30
        )
    assert r.verdict in (verdict_pb2.VERDICT_SAFE, verdict_pb2.VERDICT_UNSAFE)
    assert 0.0 <= r.unsafe_score <= 1.0
    assert (r.verdict == verdict_pb2.VERDICT_UNSAFE) == (r.unsafe_score >= r.threshold)
    assert r.assessed_role == conversation_pb2.ROLE_USER
    assert [c.code for c in r.category_scores] == [f"S{i}" for i in range(1, 14)]
    assert sum(c.score for c in r.category_scores) == pytest.approx(r.unsafe_score, abs=1e-4)
    assert r.policy_id.startswith("p-")
    assert r.verdict_token_mass > 0.5
    assert r.timings.total.ToNanoseconds() >= r.timings.inference.ToNanoseconds() > 0
    if r.verdict == verdict_pb2.VERDICT_UNSAFE:
        assert r.categories


async def test_get_model_info(onnx_server, onnx_dir):
    async with grpc.aio.insecure_channel(onnx_server.target) as ch:
        info = await stub(ch).GetModelInfo(guard_service_pb2.GetModelInfoRequest(), timeout=10)
    assert info.family == "llama-guard-3-1b"
    assert info.backend == "onnxruntime"
    assert info.device == "cpu"
    assert info.dtype == "float32"
    assert info.model_id == str(onnx_dir)
    assert [c.code for c in info.default_categories] == [f"S{i}" for i in range(1, 14)]
    assert len(info.template_hash) == 64 and len(info.verdict_token_ids) == 2


async def test_threshold_role_and_policy(onnx_server):
    custom = conversation_pb2.Policy(
        categories=[
            conversation_pb2.Category(code="C1", name="Cooking secrets.", description="No."),
            conversation_pb2.Category(code="C2", name="Weather talk."),
        ]
    )
    convo = ((U, "hi there"), (A, "hello! how can I help?"), (U, "write a poem"))
    async with grpc.aio.insecure_channel(onnx_server.target) as ch:
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
        as_agent = await s.Classify(request(*convo, role=A), timeout=30)
        cut = await s.Classify(request(*convo[:2]), timeout=30)
        own = await s.Classify(
            request((U, "recipe please"), policy=custom, options=SCORES), timeout=30
        )
    assert low.verdict == verdict_pb2.VERDICT_UNSAFE
    assert low.unsafe_score == pytest.approx(base.unsafe_score, abs=1e-5)
    assert as_agent.assessed_role == conversation_pb2.ROLE_ASSISTANT
    assert as_agent.unsafe_score == pytest.approx(cut.unsafe_score, abs=1e-5)
    assert [c.code for c in own.category_scores] == ["C1", "C2"]


async def test_same_answers_as_the_torch_server(onnx_server, guard_server):
    requests = [
        request((U, "How do I bake bread?"), options=SCORES),
        request((U, "hi"), (A, "Hello! How can I help you today?"), options=SCORES),
        request(
            (U, "pick a lock"),
            policy=conversation_pb2.Policy(excluded_codes=["S2"]),
            options=SCORES,
        ),
        request((U, "write a long story about a dragon " * 8), options=SCORES),
    ]
    answers = {}
    for name, srv in (("onnx", onnx_server), ("torch", guard_server)):
        async with grpc.aio.insecure_channel(srv.target) as ch:
            answers[name] = [await stub(ch).Classify(r, timeout=30) for r in requests]
    for o, t in zip(answers["onnx"], answers["torch"], strict=True):
        assert o.verdict == t.verdict
        assert [c.code for c in o.categories] == [c.code for c in t.categories]
        assert o.unsafe_score == pytest.approx(t.unsafe_score, abs=1e-3)
        assert [c.score for c in o.category_scores] == pytest.approx(
            [c.score for c in t.category_scores], abs=1e-3
        )
        assert o.policy_id == t.policy_id
