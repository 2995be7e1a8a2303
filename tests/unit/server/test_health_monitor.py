"""guardwire_server.health_monitor with a real MicroBatcher: failed batches, out-of-memory, the
watchdog
and recovery probes -- in process, no gRPC."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from guardwire_backends.base import InferenceError, Readout, ScoreItem, ScoreResult
from guardwire_server.batcher import BatcherLimits, MicroBatcher
from guardwire_server.errors import BackendFailure
from guardwire_server.health_monitor import (
    BackendOutOfMemory,
    HealthMonitor,
    guard_out_of_memory,
    is_out_of_memory,
)


class OutOfMemoryError(RuntimeError):
    """Named like ``torch.cuda.OutOfMemoryError`` (torch is not needed to detect it)."""


def item(tag: int = 0) -> ScoreItem:
    return ScoreItem(prefix_ids=(1,), tail_ids=(tag + 2,), readouts=(Readout(0, (1,)),))


class Backend:
    """A controllable score function: fail, out-of-memory, or block until released."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        self.cache_clears = 0
        self.calls = 0

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        self.calls += 1
        if self.mode == "fail":
            raise InferenceError("injected failure")
        if self.mode == "oom":
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.mode == "hang":
            self.release.wait(10)
        return [ScoreResult((), 1, 0) for _ in items]

    def clear_caches(self) -> None:
        self.cache_clears += 1


def setup(*, timeout: float | None = None, after: int = 3, probe_s: float = 0.02):
    backend = Backend()
    batcher = MicroBatcher(backend.score, BatcherLimits(max_batch_size=4, max_wait_s=0.001))
    changes: list[tuple[bool, str]] = []
    monitor = HealthMonitor(
        unhealthy_after=after,
        probe_interval_s=probe_s,
        max_probe_interval_s=0.1,
        on_change=lambda ok, why: changes.append((ok, why)),
    )
    adapter = SimpleNamespace(
        default_policy=None, encode=lambda conv, policy: SimpleNamespace(items=(item(99),))
    )
    guard = SimpleNamespace(batcher=batcher, backend=backend, adapter=adapter)
    monitor.attach(guard, inference_timeout_s=timeout)
    return backend, batcher, monitor, changes


async def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_out_of_memory_is_recognised_through_the_cause_chain() -> None:
    assert is_out_of_memory(OutOfMemoryError("x"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"))
    assert is_out_of_memory(RuntimeError("Failed to allocate memory for requested buffer"))
    wrapped = InferenceError("forward pass failed")
    wrapped.__cause__ = OutOfMemoryError("boom")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(InferenceError("shape mismatch"))


def test_oom_wrapper_clears_caches_and_says_memory() -> None:
    backend = Backend()
    backend.mode = "oom"
    counted = []
    score = guard_out_of_memory(backend.score, backend, lambda: counted.append(1))
    with pytest.raises(BackendOutOfMemory, match="out of memory") as info:
        score([item(), item(1)])
    assert "caches were cleared" in str(info.value) and backend.cache_clears == 1
    assert counted == [1] and isinstance(info.value.__cause__, OutOfMemoryError)
    backend.mode = "fail"
    with pytest.raises(InferenceError, match="injected"):  # other errors pass unchanged
        score([item()])
    assert backend.cache_clears == 1


async def test_failures_flip_health_and_a_probe_recovers() -> None:
    backend, batcher, monitor, changes = setup(after=3)
    await batcher.start()
    try:
        assert (await batcher.submit(item(), deadline=None)).batch_size == 1
        backend.mode = "fail"
        for i in range(3):
            with pytest.raises(BackendFailure, match="injected failure"):
                await batcher.submit(item(i), deadline=None)
            assert monitor.healthy is (i < 2)
        assert changes == [(False, changes[0][1])] and "3 consecutive" in changes[0][1]
        await wait_for(lambda: monitor.counters["probes"] >= 2)  # probes fail while broken
        assert not monitor.healthy
        backend.mode = "ok"
        await wait_for(lambda: monitor.healthy)
        assert changes[-1] == (True, "") and monitor.counters["recoveries"] == 1
    finally:
        monitor.close()
        await batcher.stop()


async def test_one_success_resets_the_failure_count() -> None:
    backend, batcher, monitor, _ = setup(after=2)
    await batcher.start()
    try:
        for mode in ("fail", "ok", "fail", "ok"):
            backend.mode = mode
            try:
                await batcher.submit(item(), deadline=None)
            except BackendFailure:
                pass
            assert monitor.healthy
    finally:
        monitor.close()
        await batcher.stop()


async def test_oom_fails_only_that_batch_with_a_memory_error() -> None:
    backend, batcher, monitor, _ = setup(after=3)
    await batcher.start()
    try:
        backend.mode = "oom"
        with pytest.raises(BackendFailure, match="out of memory") as info:
            await batcher.submit(item(), deadline=None)
        assert "caches were cleared" in str(info.value)
        assert backend.cache_clears == 1 and monitor.counters["out_of_memory"] == 1
        backend.mode = "ok"
        assert (await batcher.submit(item(), deadline=None)).batch_size == 1
        assert monitor.healthy
    finally:
        monitor.close()
        await batcher.stop()


async def test_watchdog_fails_a_hung_batch_and_blocks_until_it_returns() -> None:
    backend, batcher, monitor, changes = setup(timeout=0.2)
    await batcher.start()
    try:
        backend.mode = "hang"
        t0 = time.monotonic()
        hung = asyncio.ensure_future(batcher.submit(item(1), deadline=None))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit(item(2), deadline=None))
        with pytest.raises(BackendFailure, match=r"inference exceeded 0.2s"):
            await hung
        assert time.monotonic() - t0 < 1.0  # did not wait for the thread
        with pytest.raises(BackendFailure, match="stuck"):
            await queued  # queued behind the stuck call: failed, not left waiting
        assert batcher.hung and not monitor.healthy and monitor.counters["hangs"] == 1
        t1 = time.monotonic()
        with pytest.raises(BackendFailure, match="unhealthy"):
            await batcher.submit(item(3), deadline=None)  # fails fast while stuck
        assert time.monotonic() - t1 < 0.1
        backend.mode = "ok"
        backend.release.set()
        await wait_for(lambda: not batcher.hung and monitor.healthy)
        assert (await batcher.submit(item(4), deadline=None)).batch_size == 1
        assert [ok for ok, _ in changes] == [False, True]
    finally:
        backend.release.set()
        monitor.close()
        await batcher.stop()


async def test_watchdog_allows_a_big_batch_its_measured_time_but_still_catches_a_hang() -> None:
    """A slow machine is not a hang: the watchdog scales with the seconds per token measured on
    earlier batches (a 1B model on 2 CPU cores spent minutes on a full batch)."""
    per_token_s = 0.004
    state = {"hang": False}
    release = threading.Event()

    def score(items: Sequence[ScoreItem]) -> list[ScoreResult]:
        if state["hang"]:
            release.wait(10)
        time.sleep(per_token_s * sum(len(i.tail_ids) for i in items))
        return [ScoreResult((), 1, 0) for _ in items]

    def long_item(tokens: int) -> ScoreItem:
        return ScoreItem((1,), tuple(range(2, 2 + tokens)), (Readout(0, (1,)),))

    batcher = MicroBatcher(score, BatcherLimits(max_batch_size=1, max_wait_s=0.001))
    batcher.inference_timeout_s = 0.2
    await batcher.start()
    try:
        assert batcher.watchdog_timeout(10_000) == 0.2  # nothing measured yet: the floor
        await batcher.submit(long_item(10), deadline=None)  # 0.04 s: learns ~0.004 s/token
        big = batcher.watchdog_timeout(150)
        assert big is not None and big > 4 * 0.5 * per_token_s * 150  # >> the 0.2 s floor
        outcome = await batcher.submit(long_item(150), deadline=None)  # 0.6 s > 0.2 s floor
        assert outcome.inference_s > 0.2 and not batcher.hung
        assert batcher.watchdog_timeout(1) == 0.2  # small batches keep the floor
        state["hang"] = True
        t0 = time.monotonic()
        with pytest.raises(BackendFailure, match="inference exceeded"):
            await batcher.submit(long_item(10), deadline=None)
        assert time.monotonic() - t0 < 1.0, "a real hang is still failed at the floor"
    finally:
        release.set()
        await batcher.stop()


async def test_stop_does_not_wait_for_a_stuck_call() -> None:
    backend, batcher, monitor, _ = setup(timeout=0.1)
    await batcher.start()
    backend.mode = "hang"
    with pytest.raises(BackendFailure):
        await batcher.submit(item(), deadline=None)
    t0 = time.monotonic()
    await asyncio.wait_for(batcher.stop(drain=True), 2.0)
    assert time.monotonic() - t0 < 1.0
    monitor.close()
    backend.release.set()
