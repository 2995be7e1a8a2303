"""Fault injection through a real server (fake backend): a backend exception, a simulated CUDA
out-of-memory and a hung inference fail only the affected batch with BACKEND_FAILURE; repeated
failures flip health to NOT_SERVING and a background probe flips it back; the process never
dies on a request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardwire.v1 import guard_service_pb2, guard_service_pb2_grpc
from guardwire_backends.base import ScoreItem
from guardwire_server.domain import Conversation, Role, Turn
from tests.conftest import run_server
from tests.integration.helpers import U, details, request, stub

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POISON = "zyzzyva quagga poison"


class OutOfMemoryError(RuntimeError):
    """Named like ``torch.cuda.OutOfMemoryError``."""


class Faults:
    """The fake backend's ``fail_when`` hook, switched by the test (runs in the worker thread)."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | fail | poison | oom | hang
        self.poison_ids: frozenset[int] = frozenset()
        self.release = threading.Event()

    def __call__(self, items: Sequence[ScoreItem]) -> bool:
        mode = self.mode
        if mode == "fail":
            return True
        if mode == "poison":
            return any(self.poison_ids <= set(it.tail_ids) for it in items)
        if mode == "oom":
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        if mode == "hang":
            self.release.wait(30)
        return False


async def health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="guardwire.v1.GuardService"), timeout=5
        )
    return r.status


async def wait_health(target: str, want: int, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while await health(target) != want:
        assert time.monotonic() - t0 < timeout, f"health never became {want}"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def _poison_ids(guard: Any) -> frozenset[int]:
    """Token ids that occur in the poisoned prompt and in no benign one used here."""
    adapter, policy = guard.adapter, guard.catalog.default

    def ids(text: str) -> set[int]:
        return set(adapter.encode(Conversation((Turn(Role.USER, text),)), policy).item.tail_ids)

    benign = set().union(*(ids(f"question {i}") for i in range(10)), ids("hello"))
    return frozenset(ids(POISON) - benign)


@pytest.fixture(scope="module")
async def faulty_server(tiny_model_dir):
    faults = Faults()
    async with run_server(
        tiny_model_dir,
        backend="fake",
        backend_options={"fail_when": faults},
        max_batch_size=1,
        inference_timeout_s=0.4,
        unhealthy_after_failures=3,
        recovery_probe_s=0.05,
    ) as srv:
        faults.poison_ids = _poison_ids(srv.server.guard)
        assert faults.poison_ids
        try:
            yield srv, faults
        finally:
            faults.release.set()


@pytest.fixture
async def faulty(faulty_server):
    """The shared faulty server, healthy and fault-free before and after each test."""
    srv, faults = faulty_server
    faults.mode = "ok"
    faults.release = threading.Event()
    await wait_health(srv.target, SERVING)
    yield srv, faults
    faults.mode = "ok"
    faults.release.set()
    await wait_health(srv.target, SERVING)


async def test_backend_exception_fails_only_the_affected_batch(faulty) -> None:
    srv, faults = faulty
    faults.mode = "poison"
    texts = [POISON if i in (3, 7) else f"question {i}" for i in range(10)]
    async with grpc.aio.insecure_channel(srv.target) as ch:
        s = stub(ch)
        results = await asyncio.gather(
            *(s.Classify(request((U, t)), timeout=10) for t in texts), return_exceptions=True
        )
    for i, r in enumerate(results):
        if i in (3, 7):
            assert isinstance(r, grpc.aio.AioRpcError), i
            d = details(r)
            assert d["code"] == grpc.StatusCode.INTERNAL and d["reason"] == "BACKEND_FAILURE"
            assert "injected failure" in r.details()
        else:
            assert isinstance(r, guard_service_pb2.ClassifyResponse), (i, r)
    assert await health(srv.target) == SERVING  # two failures are not a sick backend


async def test_simulated_cuda_oom_fails_the_batch_and_clears_caches(faulty) -> None:
    srv, faults = faulty
    fake = srv.server.guard.backend
    clears = fake.cache_clears
    faults.mode = "oom"
    async with grpc.aio.insecure_channel(srv.target) as ch:
        s = stub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.Classify(request((U, "hello")), timeout=10)
        d = details(info.value)
        assert d["code"] == grpc.StatusCode.INTERNAL and d["reason"] == "BACKEND_FAILURE"
        assert "out of memory" in info.value.details()
        assert "caches were cleared" in info.value.details()
        assert fake.cache_clears == clears + 1
        assert srv.server.health_monitor.counters["out_of_memory"] >= 1
        faults.mode = "ok"
        r = await s.Classify(request((U, "hello")), timeout=10)
    assert r.verdict


async def test_hung_inference_is_failed_by_the_watchdog_and_recovers(faulty) -> None:
    srv, faults = faulty
    faults.mode = "hang"
    async with grpc.aio.insecure_channel(srv.target) as ch:
        s = stub(ch)
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.Classify(request((U, "hello")), timeout=10)
        took = time.monotonic() - t0
        d = details(info.value)
        assert d["reason"] == "BACKEND_FAILURE" and "inference exceeded 0.4s" in d_msg(info)
        assert took < 2.0  # the watchdog's 0.4 s, not the caller's 10 s
        assert await health(srv.target) == NOT_SERVING  # stuck until the call returns
        t1 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as fast:
            await s.Classify(request((U, "question 1")), timeout=10)
        assert details(fast.value)["reason"] == "BACKEND_FAILURE"
        assert time.monotonic() - t1 < 1.0  # refused at once while stuck
        faults.mode = "ok"
        faults.release.set()
        await wait_health(srv.target, SERVING)
        r = await s.Classify(request((U, "hello")), timeout=10)
    assert r.verdict and srv.server.health_monitor.counters["hangs"] >= 1


def d_msg(info: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> str:
    return info.value.details() or ""


async def test_repeated_failures_flip_health_and_a_probe_recovers(faulty) -> None:
    srv, faults = faulty
    faults.mode = "fail"
    async with grpc.aio.insecure_channel(srv.target) as ch:
        s = stub(ch)
        for i in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.Classify(request((U, f"question {i}")), timeout=10)
            assert details(info.value)["reason"] == "BACKEND_FAILURE"
        await wait_health(srv.target, NOT_SERVING, timeout=2.0)
        assert await health(srv.target) == NOT_SERVING
        info_resp = await s.GetModelInfo(guard_service_pb2.GetModelInfoRequest(), timeout=5)
        assert info_resp.model_id  # the process is alive and answering
        faults.mode = "ok"
        # no request is sent: the background probe alone must bring the backend back
        recovered_in = await wait_health(srv.target, SERVING, timeout=5.0)
        monitor = srv.server.health_monitor
        assert monitor.counters["probes"] >= 1 and monitor.counters["recoveries"] >= 1
        r = await s.Classify(request((U, "hello")), timeout=10)
    assert r.verdict and recovered_in < 5.0


def test_sigterm_with_a_stuck_inference_exits_0_at_once(tiny_model_dir) -> None:
    """A GPU call that never returns must not keep the process alive after SIGTERM (the
    interpreter would otherwise join the stuck worker thread at exit, forever)."""
    from tests.subprocess_server import spawn_server

    with spawn_server(
        tiny_model_dir, hang_on_text="quagmire", inference_timeout_s=0.5, drain_grace_s=5
    ) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            s = guard_service_pb2_grpc.GuardServiceStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                s.Classify(request((U, "quagmire")), timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "inference exceeded 0.5s" in info.value.details()
        t0 = time.monotonic()
        status = srv.terminate(timeout=30)
        took = time.monotonic() - t0
    assert status == 0 and took < 10, (status, took)
